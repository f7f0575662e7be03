"""Shared fixtures: configs composed exactly as `rlx-train` composes them, pointed at tmp stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rlx.config import CONF_DIR

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One warm-start cache for the whole session (the debug warm-start is keyed by its config)."""
    return tmp_path_factory.mktemp("warmstart-cache")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A per-module folder holding an MLflow sqlite store, checkpoints and artifacts."""
    return tmp_path_factory.mktemp("store")


def compose_config(store: Path, cache_dir: Path, *overrides: str, debug: bool = True):
    """The composed config of `rlx-train <overrides>` with every output under `store`."""
    base = [
        f"logger.tracking_uri=sqlite:///{store}/mlflow.db",
        f"logger.artifact_location={store}/artifacts",
        f"checkpoint.dir={store}/checkpoints",
        f"cache_dir={cache_dir}",
    ]
    if debug:
        base.append("experiment=debug")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=base + list(overrides))


@pytest.fixture
def make_config(store, cache_dir):
    return lambda *overrides, debug=True: compose_config(store, cache_dir, *overrides, debug=debug)

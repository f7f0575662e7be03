"""Checks of the machine a run needs, made before any model or MLflow run exists: the directories
it writes are writable, and the MLflow tracking server (for an http(s) tracking URI) answers.
Each failure is a one-line ConfigError naming the key and the value."""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from omegaconf import DictConfig

from rlx.errors import ConfigError

SERVER_TIMEOUT_S = 5.0


def check_writable(key: str, directory: str | os.PathLike) -> None:
    """`directory` exists (it is created here, as the run would) and a file can be written in it.
    Tried for real: permission bits do not tell (root ignores them; read-only mounts, /proc)."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"{key}={str(directory)!r}: not a writable directory ({exc.strerror or exc}); "
                          "pick a directory you can write to") from None


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a sqlite:/// tracking URI (None for other stores)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///"):])


def check_tracking_server(tracking_uri: str, timeout_s: float = SERVER_TIMEOUT_S) -> None:
    """An http(s) tracking URI answers MLflow's health endpoint within timeout_s (MLflow's own
    client would retry with back-off for minutes)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):  # noqa: S310 - the user's own server
            return
    except urllib.error.HTTPError as exc:  # it answered: a server is there (health may be elsewhere)
        if exc.code < 500:
            return
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise ConfigError(f"logger.tracking_uri={tracking_uri!r}: no MLflow server answers ({reason}, "
                      f"{timeout_s:g} s time-out); start it, or use a local store "
                      "(MLFLOW_TRACKING_URI=sqlite:///outputs/mlflow.db)")


def check_environment(cfg: DictConfig) -> None:
    """Every directory the run writes, and the tracking server when tracking is on."""
    check_writable("checkpoint.dir", cfg.checkpoint.dir)
    check_writable("cache_dir", cfg.cache_dir)
    if not cfg.logger.get("enabled", True):
        return
    uri = str(cfg.logger.tracking_uri)
    database = sqlite_path(uri)
    if database is not None:
        check_writable("logger.tracking_uri", database.parent)
        check_writable("logger.artifact_location", cfg.logger.artifact_location)
    check_tracking_server(uri)

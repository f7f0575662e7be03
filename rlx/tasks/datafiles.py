"""Rows of prompts from local files (JSONL or parquet), seeded splits and derived alphabets.

Shared by the custom and math tasks. Files are read once, at task construction; a missing or
malformed file is a config error (one line naming the key, the path and what was expected).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import random
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from rlx.config import ConfigError

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")


def load_rows(path: str | os.PathLike, key: str = "task.prompts") -> list[dict[str, Any]]:
    """Every row of a JSONL (one JSON object per line; blank lines skipped) or parquet file, as
    dicts. ConfigError naming `key` when the file is absent, of another type, or not rows."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{key}={str(path)!r}: no such file")
    suffix = file.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return _parquet_rows(file, key)
    if suffix not in JSONL_SUFFIXES:
        raise ConfigError(f"{key}={str(path)!r}: expected a .jsonl or .parquet file")
    rows = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{key}={str(path)!r}: line {number} is not JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise ConfigError(f"{key}={str(path)!r}: line {number} is not a JSON object")
            rows.append(row)
    return rows


def _parquet_rows(file: Path, key: str) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow comes with mlflow
        raise ConfigError(f"{key}={str(file)!r}: reading parquet needs pyarrow (pip install pyarrow)") from exc
    try:
        return pq.read_table(file).to_pylist()
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a config problem
        raise ConfigError(f"{key}={str(file)!r}: not a readable parquet file ({exc})") from exc


def require_field(rows: Sequence[dict], field: str, key: str, path: str) -> None:
    """ConfigError unless every row has `field` as a string."""
    for i, row in enumerate(rows):
        if not isinstance(row.get(field), str):
            raise ConfigError(f"{key}={path!r}: row {i} has no text field {field!r} (fields: {sorted(row)})")


def split_rows(rows: Sequence[Any], eval_fraction: float, seed: int) -> tuple[list, list]:
    """(train, held-out): a seeded shuffle, the last round(eval_fraction * n) rows held out
    (at least one when eval_fraction > 0 and there are two rows or more)."""
    if not 0 <= eval_fraction < 1:
        raise ConfigError(f"task.eval_fraction={eval_fraction!r}: must be in [0, 1)")
    order = list(rows)
    random.Random(seed).shuffle(order)
    n_eval = round(eval_fraction * len(order))
    if eval_fraction > 0 and n_eval == 0 and len(order) >= 2:
        n_eval = 1
    return order[: len(order) - n_eval], order[len(order) - n_eval:]


def derive_alphabet(texts: Iterable[str]) -> str:
    """Every character of the texts, sorted (a character tokenizer's vocabulary)."""
    return "".join(sorted(set("".join(texts))))


def import_callable(spec: str, key: str = "task.reward_fn") -> Callable:
    """The function named by "package.module:function" or "path/to/file.py:function".

    The working directory is put on sys.path first, so a module next to where rlx-train runs
    imports without being installed. ConfigError when the spec, module or function is wrong."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{key}={spec!r}: expected 'package.module:function' or 'file.py:function'")
    try:
        if module_name.endswith(".py"):
            module = _module_from_file(Path(module_name).expanduser(), key, spec)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - an import error in user code is a config problem here
        raise ConfigError(f"{key}={spec!r}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from exc
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ConfigError(f"{key}={spec!r}: {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ConfigError(f"{key}={spec!r}: {attr!r} is not callable")
    return fn


def _module_from_file(path: Path, key: str, spec: str):
    if not path.is_file():
        raise ConfigError(f"{key}={spec!r}: no such file {str(path)!r}")
    module_spec = importlib.util.spec_from_file_location(f"rlx_user_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module

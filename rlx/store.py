"""Prepare the MLflow store: created and migrated once, safely across processes.

MLflow creates a new sqlite store (tables, schema migrations, the Default experiment) in
whichever process opens it first, and two processes that open it at the same moment race: one
of them fails ("table ... already exists", "Online migration expected to match one row"). Two
processes creating the same experiment at once race the same way (a unique-constraint error).
Here both happen under an exclusive file lock (``<db>.lock`` next to the database), so any number
of runs (plain, or the jobs of a parallel sweep) may start together on a new or existing store.
Other stores (a tracking server, postgres, ...) are left to the server / database: no lock.
"""

from __future__ import annotations

import fcntl
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (query string dropped), else None
    (another scheme, or an in-memory database)."""
    m = re.match(r"^sqlite:///([^?]*)", uri)
    if not m or m.group(1) in ("", ":memory:"):
        return None
    return Path(m.group(1))


def lock_path(db: Path) -> Path:
    """The lock file of a sqlite store: ``<db>.lock`` next to it."""
    return db.with_name(db.name + ".lock")


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive, cross-process lock on the sqlite store at ``uri`` (blocks until free);
    a no-op for any other store. The lock is released when the block ends or the process dies."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path(db), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_experiment(uri: str, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name`` in the store at ``uri``: the store is created and migrated
    if needed and the experiment created if missing (with ``artifact_location``), both under
    the store's lock, so concurrent callers all get the one store and the one experiment."""
    from mlflow.tracking import MlflowClient

    with store_lock(uri):
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(name)  # opening the store creates / migrates it
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(name, artifact_location=artifact_location)

"""Processes starting together on a new sqlite MLflow store all get their runs recorded."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rlx.store import ensure_experiment, lock_path, sqlite_path

# Each process imports MLflow, says it is ready, waits for the go file, then opens the store,
# creates the experiment (through rlx.store), a run and a metric.
WORKER = """
import sys, time
from pathlib import Path
from mlflow.tracking import MlflowClient
from rlx.store import ensure_experiment
uri, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.005)
experiment_id = ensure_experiment(uri, "race")
client = MlflowClient(uri)
run = client.create_run(experiment_id)
client.log_metric(run.info.run_id, "m", 1.0)
client.set_terminated(run.info.run_id)
"""


def test_sqlite_path():
    assert sqlite_path("sqlite:///outputs/mlflow.db") == Path("outputs/mlflow.db")
    assert sqlite_path("sqlite:////abs/x.db?timeout=30") == Path("/abs/x.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("http://127.0.0.1:5000") is None
    assert lock_path(Path("/a/mlflow.db")) == Path("/a/mlflow.db.lock")


def test_ensure_experiment_creates_once(tmp_path):
    uri = f"sqlite:///{tmp_path}/new/mlflow.db"
    first = ensure_experiment(uri, "x", artifact_location=(tmp_path / "art").as_uri())
    assert ensure_experiment(uri, "x") == first
    assert MlflowClient(uri).get_experiment(first).artifact_location == (tmp_path / "art").as_uri()


def test_processes_starting_together_on_a_new_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(4)]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, uri, str(r), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in ready]
    deadline = time.time() + 120
    while not all(r.exists() for r in ready) and time.time() < deadline:
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    failed = [out[-2000:] for p, out in zip(procs, outputs) if p.returncode != 0]
    assert not failed, "\n---\n".join(failed)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert len(runs) == 4 and all(r.data.metrics == {"m": 1.0} for r in runs)


@pytest.mark.slow
def test_two_rlx_train_runs_starting_together(tmp_path, cache_dir):
    """The reported failure: two `rlx-train` started at once on a new store (one died with
    "table ... already exists"); the shared warm-start cache may be trained by both."""
    store = [f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"logger.artifact_location={tmp_path}/artifacts",
             f"checkpoint.dir={tmp_path}/checkpoints", f"cache_dir={cache_dir}"]
    args = [sys.executable, "-m", "rlx.train", "experiment=debug", "trainer.max_steps=1", "eval_every=0",
            "trainer.num_threads=1", *store]
    procs = [subprocess.Popen([*args, f"seed={i}", f"hydra.run.dir={tmp_path}/run{i}"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=1800)[0] for p in procs]
    failed = [out[-3000:] for p, out in zip(procs, outputs) if p.returncode != 0]
    assert not failed, "\n---\n".join(failed)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("expression").experiment_id])
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in runs)

"""A run stopped by SIGTERM (SLURM, Kubernetes) or SIGINT (Ctrl-C) checkpoints its last completed
iteration, ends its MLflow run KILLED and exits 128 + signal; `resume=last` then finishes the same
MLflow run exactly as an uninterrupted run would have."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

KEYS = ("train/reward_mean", "train/entropy", "control/zeta")  # repo_r: the controller's state shows in zeta


def train_command(store: Path, cache_dir: Path, max_steps: int, *extra: str) -> list[str]:
    """`rlx-train` (repo_r, the debug preset) with every output under `store`."""
    return [sys.executable, "-m", "rlx.train", "algorithm=repo_r", "experiment=debug", f"trainer.max_steps={max_steps}",
            "checkpoint.every=1000", "eval_every=0", "trainer.num_threads=1",
            f"logger.tracking_uri=sqlite:///{store}/mlflow.db", f"logger.artifact_location={store}/artifacts",
            f"checkpoint.dir={store}/checkpoints", f"cache_dir={cache_dir}", f"hydra.run.dir={store}/hydra", *extra]


def iterations_done(log: Path) -> int:
    """Iterations the plain progress lines of a log ("iteration 3/40  reward ...") have counted so far."""
    counts = re.findall(r"^iteration (\d+)/\d+", log.read_text(errors="replace"), flags=re.MULTILINE)
    return int(counts[-1]) if counts else 0


def run_until_signalled(store: Path, cache_dir: Path, max_steps: int, signum: int, after: int) -> int:
    """Start a run, send `signum` once the progress bar shows `after` iterations, return the exit status."""
    log = store / "train.log"
    with log.open("w") as out:
        process = subprocess.Popen(train_command(store, cache_dir, max_steps), cwd=store, stdout=out,
                                   stderr=subprocess.STDOUT)
        deadline = time.time() + 1200
        while iterations_done(log) < after:
            assert process.poll() is None, "training ended before the signal:\n" + log.read_text()[-3000:]
            assert time.time() < deadline, "no progress:\n" + log.read_text()[-3000:]
            time.sleep(0.2)
        process.send_signal(signum)
        try:
            return process.wait(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()


def resume(store: Path, cache_dir: Path, max_steps: int) -> None:
    result = subprocess.run(train_command(store, cache_dir, max_steps, "resume=last"), cwd=store,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]


def only_run(store: Path):
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("expression").experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def check_interrupted(store: Path, rc: int, signum: int, max_steps: int, after: int) -> None:
    """Exit status 128 + signum, run KILLED, last.ckpt holds exactly the iterations logged."""
    log = (store / "train.log").read_text(errors="replace")
    assert rc == 128 + signum, f"rc {rc}:\n{log[-3000:]}"
    client, run = only_run(store)
    assert run.info.status == "KILLED"
    steps = [step for step, _ in history(client, run.info.run_id, "train/reward_mean")]
    assert steps == list(range(len(steps))) and after <= len(steps) < max_steps
    saved = torch.load(store / "checkpoints" / run.info.run_id / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["epoch"] + 1 == len(steps)  # the checkpoint of the last completed iteration
    assert saved["rlx"]["mlflow_run_id"] == run.info.run_id and "rng" in saved["rlx"]


def check_resumed(store: Path, max_steps: int) -> dict[str, list[tuple[int, float]]]:
    """The same MLflow run, FINISHED, with every iteration logged exactly once; its curves."""
    client, run = only_run(store)
    assert run.info.status == "FINISHED"
    curves = {key: history(client, run.info.run_id, key) for key in KEYS}
    assert [step for step, _ in curves["train/reward_mean"]] == list(range(max_steps))
    return curves


def test_interrupted_exit_status_and_pickling(tmp_path):
    import pickle

    from rlx.interrupt import Interrupted

    assert Interrupted(signal.SIGTERM, tmp_path / "last.ckpt").exit_code == 143
    assert Interrupted(signal.SIGINT, None).exit_code == 130
    copy = pickle.loads(pickle.dumps(Interrupted(signal.SIGTERM, tmp_path)))
    assert (copy.signum, copy.checkpoint) == (signal.SIGTERM, tmp_path)
    assert str(copy) == f"stopped by SIGTERM; checkpoint {tmp_path}"


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_matches_an_uninterrupted_run(tmp_path, cache_dir):
    max_steps, after = 30, 3
    (tmp_path / "signalled").mkdir()
    (tmp_path / "straight").mkdir()
    rc = run_until_signalled(tmp_path / "signalled", cache_dir, max_steps, signal.SIGTERM, after)
    check_interrupted(tmp_path / "signalled", rc, signal.SIGTERM, max_steps, after)
    resume(tmp_path / "signalled", cache_dir, max_steps)
    resumed = check_resumed(tmp_path / "signalled", max_steps)

    result = subprocess.run(train_command(tmp_path / "straight", cache_dir, max_steps), cwd=tmp_path / "straight",
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    straight = check_resumed(tmp_path / "straight", max_steps)
    for key in KEYS:
        assert [s for s, _ in resumed[key]] == [s for s, _ in straight[key]], key
        assert [v for _, v in resumed[key]] == pytest.approx([v for _, v in straight[key]], rel=1e-5), key


@pytest.mark.slow
def test_sigint_checkpoints_and_resumes(tmp_path, cache_dir):
    max_steps, after = 12, 2
    rc = run_until_signalled(tmp_path, cache_dir, max_steps, signal.SIGINT, after)
    check_interrupted(tmp_path, rc, signal.SIGINT, max_steps, after)
    resume(tmp_path, cache_dir, max_steps)
    check_resumed(tmp_path, max_steps)

"""The command line as a user runs it: Hydra multirun sweeps, multirun.sh, a killed run resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import compose_config
from rlx.train import train

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def store_overrides(store: Path, cache_dir: Path) -> list[str]:
    return [f"logger.tracking_uri=sqlite:///{store}/mlflow.db", f"logger.artifact_location={store}/artifacts",
            f"checkpoint.dir={store}/checkpoints", f"cache_dir={cache_dir}"]


def runs_of(store: Path):
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("expression")
    runs = client.search_runs([experiment.experiment_id])
    return client, [r for r in runs if r.data.tags.get("rlx.kind") != "sweep"]  # a sweep's parent run: rlx.sweep


def test_hydra_multirun_makes_one_tagged_run_per_job(tmp_path, cache_dir):
    result = subprocess.run(
        [sys.executable, "-m", "rlx.train", "--multirun", "algorithm=grpo,rloo", "seed=0,1", "experiment=debug",
         "trainer.max_steps=1", f"hydra.sweep.dir={tmp_path}/sweep", *store_overrides(tmp_path, cache_dir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    _, runs = runs_of(tmp_path)
    assert sorted((r.data.tags["algorithm"], r.data.tags["seed"]) for r in runs) == [
        ("grpo", "0"), ("grpo", "1"), ("rloo", "0"), ("rloo", "1")]
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    assert all(r.info.status == "FINISHED" for r in runs)


def test_multirun_sh_named_sweep(tmp_path, cache_dir):
    env = {**os.environ, "RLX_TRAIN": f"{sys.executable} -m rlx.train"}
    result = subprocess.run(
        ["bash", str(ROOT / "multirun.sh"), "smoke", "experiment=debug", "trainer.max_steps=1",
         f"hydra.sweep.dir={tmp_path}/sweep", *store_overrides(tmp_path, cache_dir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=1800, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    _, runs = runs_of(tmp_path)
    assert len(runs) == 10  # 5 algorithms x 2 seeds
    sweep_ids = {r.data.tags["sweep_id"] for r in runs}
    assert len(sweep_ids) == 1 and sweep_ids.pop().startswith("smoke-")
    assert "--sweep-id smoke-" in result.stdout


def test_multirun_sh_unknown_sweep_is_a_clear_error(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "multirun.sh"), "nope"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown sweep 'nope'" in result.stderr


def test_killed_run_resumes_from_last_checkpoint(tmp_path, cache_dir):
    """SIGKILL a real training process mid-run, then `resume=last` continues the same MLflow run
    with the controller state of the checkpoint."""
    args = [sys.executable, "-m", "rlx.train", "algorithm=repo_r", "experiment=debug", "trainer.max_steps=200",
            "checkpoint.every=1", "eval_every=0", *store_overrides(tmp_path, cache_dir)]
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 1200
    checkpoints = tmp_path / "checkpoints"
    while time.time() < deadline and len(list(checkpoints.glob("*/iter-*.ckpt"))) == 0 or \
            not any(int(p.stem.split("-")[1]) >= 4 for p in checkpoints.glob("*/iter-*.ckpt")):
        assert process.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    client, runs = runs_of(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "RUNNING"  # killed: nothing closed it
    run_id = runs[0].info.run_id

    import torch
    saved = torch.load(checkpoints / run_id / "last.ckpt", map_location="cpu", weights_only=False)
    saved_iterations = saved["epoch"] + 1
    resumed_steps = saved_iterations + 2
    final = train(compose_config(tmp_path, cache_dir, "algorithm=repo_r", f"trainer.max_steps={resumed_steps}",
                                 "checkpoint.every=1", "eval_every=0", "resume=last"))
    client, runs = runs_of(tmp_path)
    assert len(runs) == 1 and runs[0].info.run_id == run_id and runs[0].info.status == "FINISHED"
    steps = {m.step for m in client.get_metric_history(run_id, "train/reward_mean")}
    assert steps == set(range(resumed_steps))
    zeta = sorted(client.get_metric_history(run_id, "control/zeta"), key=lambda m: (m.step, m.timestamp))
    assert saved["rlx"]["regulator"]["zeta"] in [m.value for m in zeta if m.step == saved_iterations - 1]
    assert final["control/zeta"] == zeta[-1].value

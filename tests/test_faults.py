"""Faults from the field: user reward code that exits, stalls or overflows; a diverged policy
whose loss is finite; bad input that must fail before any model or MLflow run exists; a run
killed with SIGKILL at different points and resumed (same parameters, same metric history)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from rlx.learner.guards import DivergenceGuard, Guards, RewardGuard, RunStopped
from rlx.preflight import check_tracking_server, check_writable
from rlx.tasks.base import Prompt, RewardStats, as_reward, safe_rewards
from rlx.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
REWARDS = Path(__file__).parent / "fault_rewards.py"


# --------------------------------------------------------------------------- rewards
class FunctionTask:
    name = "faulty"
    batched = False

    def __init__(self, fn):
        self.fn = fn

    def reward(self, prompt, completion):
        return self.fn(completion)


def score(fn, completions, timeout_s=None):
    stats = RewardStats()
    prompts = [Prompt("p")] * len(completions)
    return safe_rewards(FunctionTask(fn), prompts, completions, stats, timeout_s), stats


def test_a_reward_calling_sys_exit_scores_zero_and_is_counted():
    def reward(completion):
        if completion == "exit":
            sys.exit(3)
        return 1.0

    rewards, stats = score(reward, ["a", "exit", "b"])
    assert rewards == [1.0, 0.0, 1.0] and stats.errors == 1 and stats.first_error.startswith("SystemExit")


def test_a_reward_past_its_time_limit_scores_zero_and_the_next_call_runs():
    def reward(completion):
        if completion == "slow":
            time.sleep(5)
        return 0.5

    start = time.perf_counter()
    rewards, stats = score(reward, ["slow", "fast"], timeout_s=0.2)
    elapsed = time.perf_counter() - start
    assert rewards == [0.0, 0.5] and stats.errors == 1 and "reward_timeout_s" in stats.first_error
    assert elapsed < 2.0  # the 5 s sleep was cut at 0.2 s


def test_a_reward_that_overflows_float32_is_an_error():
    assert as_reward(3.0e38) == 3.0e38
    with pytest.raises(ValueError, match="overflows float32"):
        as_reward(1e39)
    rewards, stats = score(lambda c: 1e39, ["a", "b"])
    assert rewards == [0.0, 0.0] and stats.errors == 2
    assert torch.isfinite(torch.tensor(rewards, dtype=torch.float32)).all()


# --------------------------------------------------------------------------- guards
def healthy_metrics(entropy: float, **extra) -> dict[str, float]:
    return {"train/entropy": entropy, "train/reward_errors": 0.0, "train/nonfinite_skips": 0.0,
            "train/optimizer_steps": 1.0, "train/grad_norm": 0.3, "train/advantage_abs_mean": 0.5, **extra}


def test_divergence_guard_fires_on_a_near_uniform_policy_after_its_patience():
    guard = DivergenceGuard(patience=2, vocab_size=19)  # ln 19 = 2.944
    guard.check(healthy_metrics(0.85), 0)
    guard.check(healthy_metrics(2.90), 1)  # one near-uniform iteration: tolerated
    with pytest.raises(RunStopped, match="near the uniform policy"):
        guard.check(healthy_metrics(2.94), 2)


def test_divergence_guard_ignores_high_entropy_that_started_high_and_normal_swings():
    started_high = DivergenceGuard(patience=1, vocab_size=19)
    for i in range(5):  # a random-init policy is near-uniform from the start: not a divergence
        started_high.check(healthy_metrics(2.93), i)
    swings = DivergenceGuard(patience=1, vocab_size=19)
    for i, h in enumerate([0.85, 1.6, 2.2, 0.4, 0.05]):  # an entropy bonus may double entropy
        swings.check(healthy_metrics(h), i)


def test_divergence_guard_fires_on_a_vanished_gradient_with_live_advantages():
    guard = DivergenceGuard(patience=2, vocab_size=19)
    guard.check(healthy_metrics(0.8, **{"train/grad_norm": 0.0, "train/advantage_abs_mean": 0.0}), 0)  # nothing to learn
    guard.check(healthy_metrics(0.8, **{"train/grad_norm": 0.0}), 1)
    with pytest.raises(RunStopped, match="gradient norm was 0"):
        guard.check(healthy_metrics(0.8, **{"train/grad_norm": 0.0}), 2)


def test_reward_guard_counts_only_iterations_where_every_sample_failed():
    guard = RewardGuard(patience=2, samples_per_iteration=8)
    guard.check(healthy_metrics(1.0, **{"train/reward_errors": 8.0}), 0)
    guard.check(healthy_metrics(1.0, **{"train/reward_errors": 7.0}), 1)  # one sample scored: streak reset
    guard.check(healthy_metrics(1.0, **{"train/reward_errors": 8.0}), 2)
    with pytest.raises(RunStopped, match="every one of the 8 samples"):
        guard.check(healthy_metrics(1.0, **{"train/reward_errors": 8.0}), 3)


def test_guard_streaks_round_trip_through_a_checkpoint():
    guards = Guards(vocab_size=19, samples_per_iteration=8, reward_patience=3, divergence_patience=3)
    guards.check(healthy_metrics(0.9, **{"train/reward_errors": 8.0}), 0)
    guards.check(healthy_metrics(2.9, **{"train/reward_errors": 8.0}), 1)
    restored = Guards(vocab_size=19, samples_per_iteration=8, reward_patience=3, divergence_patience=3)
    restored.load_state_dict(guards.state_dict())
    assert restored.state_dict() == guards.state_dict() == {"nonfinite": 0, "reward": 2, "divergence": 1,
                                                           "entropy0": 0.9}
    with pytest.raises(RunStopped):
        restored.check(healthy_metrics(2.9, **{"train/reward_errors": 8.0}), 2)


# --------------------------------------------------------------------------- preflight
def test_unwritable_directories_and_unreachable_servers_are_one_line_errors(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"checkpoint.dir='.*file/sub': not a writable directory"):
        check_writable("checkpoint.dir", a_file / "sub")
    check_writable("checkpoint.dir", tmp_path / "new" / "dir")
    assert (tmp_path / "new" / "dir").is_dir()
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="no MLflow server answers"):
        check_tracking_server("http://127.0.0.1:9", timeout_s=2)
    assert time.perf_counter() - start < 3


# --------------------------------------------------------------------------- whole runs
def rlx_train(tmp_path: Path, cache_dir: Path, *overrides: str, tracking_uri: str | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """`rlx-train experiment=debug <overrides>` in a subprocess, outputs under tmp_path."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    tmp_path.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or f"sqlite:///{tmp_path}/mlflow.db"
    args = [sys.executable, "-m", "rlx.train", "experiment=debug", "trainer.num_threads=1",
            f"logger.tracking_uri={uri}", f"logger.artifact_location={tmp_path}/artifacts",
            f"checkpoint.dir={tmp_path}/checkpoints", f"cache_dir={cache_dir}", *overrides]
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def runs_in(tmp_path: Path):
    if not (tmp_path / "mlflow.db").exists():
        return []
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


@pytest.mark.parametrize("overrides, expected", [
    (["algorithm=repo_r", "algorithm.regulator.zeta_init=0.005"], "algorithm.regulator.zeta_init=0.005"),
    (["algorithm=dapo", "algorithm.clip_ratio_high=0"], "algorithm.clip_ratio_high=0.0: must be > 0"),
    (["checkpoint.dir=/proc/rlx-nope"], "checkpoint.dir='/proc/rlx-nope': not a writable directory"),
    (["task.reward_timeout_s=0"], "task.reward_timeout_s=0.0: must be > 0"),
])
def test_bad_input_fails_before_any_run_exists(tmp_path, cache_dir, overrides, expected):
    result = rlx_train(tmp_path, cache_dir, *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    assert expected in last_line(result.stderr) and last_line(result.stderr).startswith("rlx-train: invalid config")
    assert runs_in(tmp_path) == []


def test_unreachable_tracking_server_fails_in_seconds(tmp_path, cache_dir):
    start = time.perf_counter()
    result = rlx_train(tmp_path, cache_dir, tracking_uri="http://127.0.0.1:9")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.returncode == 2 and "no MLflow server answers" in last_line(result.stderr)
    assert time.perf_counter() - start < 60  # interpreter start and imports; no retry back-off
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


@pytest.mark.slow
def test_a_diverged_policy_stops_the_run_failed_with_its_reason(tmp_path, cache_dir):
    result = rlx_train(tmp_path, cache_dir, "optim.lr=1e6", "trainer.max_steps=10")
    assert result.returncode == 1
    assert "run stopped: entropy" in last_line(result.stderr) and "near the uniform policy" in last_line(result.stderr)
    [run] = runs_in(tmp_path)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"].startswith("RunStopped: entropy")
    steps = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(run.info.run_id, "train/entropy")
    assert max(m.step for m in steps) <= 1  # stopped at the guard's patience (2), not after 10 iterations


@pytest.mark.slow
def test_reward_faults_score_zero_and_a_reward_that_always_fails_stops_the_run(tmp_path, cache_dir):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n"
                               for a in range(8) for b in range(8)))
    common = ["task=custom", f"task.prompts={prompts}", "trainer.max_steps=3", "task.reward_timeout_s=0.2",
              "task.warmstart.steps=30", "eval.samples_per_prompt=2", "eval.k=[1]", "task.eval_size=4",
              "algorithm.group_size=2"]
    flaky = rlx_train(tmp_path / "flaky", cache_dir, *common, f"task.reward_fn={REWARDS}:exits_or_sleeps")
    assert flaky.returncode == 0, flaky.stderr[-3000:]
    [run] = runs_in(tmp_path / "flaky")
    client = MlflowClient(f"sqlite:///{tmp_path}/flaky/mlflow.db")
    errors = [m.value for m in client.get_metric_history(run.info.run_id, "train/reward_errors")]
    means = client.get_metric_history(run.info.run_id, "train/reward_mean")
    assert run.info.status == "FINISHED" and len(errors) == 3 and all(e > 0 for e in errors)
    assert sorted(m.step for m in means) == [0, 1, 2]  # no step lost its reward metric

    broken = rlx_train(tmp_path / "broken", cache_dir, *common, "trainer.max_steps=10",
                       f"task.reward_fn={REWARDS}:always_overflows")
    assert broken.returncode == 1 and "the reward failed on every one of the" in last_line(broken.stderr)
    [run] = runs_in(tmp_path / "broken")
    assert run.info.status == "FAILED" and "reward failed" in run.data.tags["failure_reason"]


def metric_history(store: Path) -> tuple[dict[tuple[str, int], float], list[tuple[str, int]]]:
    """{(key, step): value} of the store's one run (timings left out) and every logged (key, step)."""
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    [run] = runs_in(store)
    values, logged = {}, []
    for key in run.data.metrics:
        if key.startswith(("time/", "perf/")):
            continue
        for m in client.get_metric_history(run.info.run_id, key):
            values[(key, m.step)] = m.value
            logged.append((key, m.step))
    return values, logged


def final_parameters(store: Path) -> dict[str, torch.Tensor]:
    [ckpt] = (store / "checkpoints").glob("*/last.ckpt")
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_runs_killed_at_three_points_resume_to_the_same_parameters_and_metric_history(tmp_path, cache_dir):
    steps = ["algorithm=repo_r", "trainer.max_steps=8", "checkpoint.every=4", "eval_every=4"]
    assert rlx_train(tmp_path / "straight", cache_dir, *steps).returncode == 0
    reference, _ = metric_history(tmp_path / "straight")
    reference_params = final_parameters(tmp_path / "straight")
    for kill_after in (4, 5, 7):  # right after a checkpoint, between checkpoints, in the last iteration
        store = tmp_path / f"killed-{kill_after}"
        kill_when_logged(store, cache_dir, steps, kill_after)
        assert rlx_train(store, cache_dir, *steps, "resume=last").returncode == 0
        values, logged = metric_history(store)
        assert len(logged) == len(set(logged)), f"kill after {kill_after}: a (key, step) was logged twice"
        assert values == reference, f"kill after {kill_after}: metric history differs"
        params = final_parameters(store)
        assert all(torch.equal(params[k], reference_params[k]) for k in reference_params)


def kill_when_logged(store: Path, cache_dir: Path, overrides: list[str], step: int) -> None:
    """Start a run, SIGKILL it once train/entropy of `step` is in its store."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "rlx.train", "experiment=debug", "trainer.num_threads=1",
            "logger.synchronous=true", f"logger.tracking_uri=sqlite:///{store}/mlflow.db",
            f"logger.artifact_location={store}/artifacts", f"checkpoint.dir={store}/checkpoints",
            f"cache_dir={cache_dir}", *overrides]
    store.mkdir(parents=True)
    process = subprocess.Popen(args, cwd=store, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    try:
        while not logged_step(store, step):
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert list((store / "checkpoints").glob("*/last.ckpt")), "killed before its first checkpoint"


def logged_step(store: Path, step: int) -> bool:
    import sqlite3

    if not (store / "mlflow.db").exists():
        return False
    try:
        with sqlite3.connect(store / "mlflow.db", timeout=1) as db:
            row = db.execute("SELECT MAX(step) FROM metrics WHERE key = 'train/entropy'").fetchone()
    except sqlite3.OperationalError:  # tables not made yet
        return False
    return row[0] is not None and row[0] >= step


@pytest.mark.slow
def test_a_preempted_slurm_job_checkpoints_requeues_and_resumes_by_itself(tmp_path, cache_dir):
    """SLURM's preemption warning (SIGUSR2, as submitit asks for it) mid-run: the iteration
    finishes, last.ckpt is written, `scontrol requeue <job>` is called, the run ends KILLED; the
    same command started again in the same job (what a requeue does) resumes the same MLflow run
    without resume=last and logs every iteration once."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    store = tmp_path / "store"
    store.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    args = [sys.executable, "-m", "rlx.train", "experiment=debug", "trainer.num_threads=1", "trainer.max_steps=12",
            "checkpoint.every=100", "logger.synchronous=true", f"logger.tracking_uri=sqlite:///{store}/mlflow.db",
            f"logger.artifact_location={store}/artifacts", f"checkpoint.dir={store}/checkpoints",
            f"cache_dir={cache_dir}"]
    process = subprocess.Popen(args, cwd=store, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not logged_step(store, 2):
        assert process.poll() is None and time.time() < deadline, process.stderr.read()[-3000:]
        time.sleep(0.1)
    process.send_signal(signal.SIGUSR2)
    stderr = process.communicate(timeout=300)[1]
    assert process.returncode == 128 + signal.SIGUSR2, stderr[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"]
    [run] = runs_in(store)
    assert run.info.status == "KILLED"
    saved = torch.load(next((store / "checkpoints").glob("*/last.ckpt")), map_location="cpu", weights_only=False)
    assert 3 <= saved["epoch"] + 1 < 12  # the iterations done when the signal came, not the periodic checkpoint

    again = subprocess.run(args, cwd=store, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "requeued SLURM job 4242: resuming" in again.stdout
    [resumed] = runs_in(store)
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    _, logged = metric_history(store)
    assert len(logged) == len(set(logged))
    steps = sorted(step for key, step in logged if key == "train/reward_mean")
    assert steps == list(range(12))

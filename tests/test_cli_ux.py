"""The command line and the MLflow dashboard as a researcher meets them: run names, descriptions,
the training experiment kind, `rlx-train --help`, one-line errors, sweeps as parent runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import compose_config
from rlx.store import EXPERIMENT_KIND_TAG, NOTE_TAG, TRAINING_KIND, ensure_experiment
from rlx.tracking import run_description, run_name

ROOT = Path(__file__).resolve().parent.parent
RLX_TRAIN = [sys.executable, "-c", "import sys; from rlx.train import main; sys.argv[0] = 'rlx-train'; main()"]


def rlx_train(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600):
    return subprocess.run([*RLX_TRAIN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


# ------------------------------------------------------------------------------------ run names
@pytest.mark.parametrize("overrides,swept,job,expected", [
    (["algorithm=grpo"], [], [], "grpo-s0"),
    (["algorithm=repo_r", "algorithm.base=dapo", "precision=bf16_mixed", "seed=2"], [], [], "repo_r+dapo-bf16_mixed-s2"),
    (["algorithm=repo_r", "algorithm.regulator.zeta_max=0.5", "seed=1"],
     ["algorithm", "algorithm.regulator.zeta_max", "seed"], ["algorithm=repo_r", "algorithm.regulator.zeta_max=0.5",
                                                            "seed=1"], "repo_r+grpo-zeta_max=0.5-s1"),
    (["algorithm=rloo", "model=small"], ["model"], ["model=small"], "rloo-small-s0"),
    (["algorithm=rloo", "run_name=mine"], ["seed"], [], "mine"),
])
def test_run_name_says_what_ran(tmp_path, overrides, swept, job, expected):
    cfg = compose_config(tmp_path, tmp_path, *overrides)
    assert run_name(cfg, swept, job) == expected


def test_run_description_names_algorithm_task_model_and_overrides(tmp_path):
    cfg = compose_config(tmp_path, tmp_path, "algorithm=repo_r", "algorithm.base=dapo")
    text = run_description(cfg, ["algorithm=repo_r", "algorithm.base=dapo", "hydra.sweep.dir=x"], "s1")
    assert text.startswith("**repo_r** (entropy regulator on base objective dapo) on task `expression`, model `tiny`")
    assert "Overrides: `algorithm=repo_r algorithm.base=dapo`" in text and "Sweep `s1`" in text


# ------------------------------------------------------------------------------ experiment kind
def test_experiments_rlx_creates_open_as_model_training(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    new = ensure_experiment(uri, "expression", description="rlx runs")
    assert client.get_experiment(new).tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND == "custom_model_development"
    assert client.get_experiment(new).tags[NOTE_TAG] == "rlx runs"
    old = client.create_experiment("made-elsewhere")  # an experiment without a kind gets it when rlx uses it
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert ensure_experiment(uri, "made-elsewhere") == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"


# ---------------------------------------------------------------------------------- help, errors
def test_help_is_rlx_help_and_fast(tmp_path):
    start = time.perf_counter()
    result = rlx_train("--help", cwd=tmp_path)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("usage: rlx-train")
    for text in ("config groups", "repo_r", "qwen3_0_6b", "local_parallel", "examples:", "where runs go",
                 "--hydra-help", "mlflow ui"):
        assert text in out, text
    assert sum(line.strip().startswith("rlx-train") for line in out.splitlines()) >= 6
    assert "torch" not in result.stderr and elapsed < 2.0, elapsed


@pytest.mark.parametrize("args,message", [
    (["algoritm=grpo"], "algoritm: no config group or key 'algoritm'; did you mean algorithm?"),
    (["algorithm=grpoo"], "algorithm=grpoo: no such algorithm; did you mean grpo?"),
    (["--multirun", "algorithm=grpo,rlooo"], "algorithm=rlooo: no such algorithm; did you mean rloo?"),
    (["algorithm.clip_ratio_lo=0.2"], "no key 'clip_ratio_lo' in algorithm; did you mean clip_ratio_low?"),
    (["algorithm.clip_ratio_low=abc"], "algorithm.clip_ratio_low='abc': must be a float"),
    (["seed=abc"], "seed='abc': must be an integer"),
])
def test_bad_override_is_one_line_and_exit_2(tmp_path, args, message):
    result = rlx_train(*args, f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"cache_dir={tmp_path}/cache",
                       cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlx-train: invalid config: ") and message in lines[0], lines
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("offline", ["1", "0"])
def test_pretrained_model_not_available_offline_fails_in_seconds(tmp_path, offline):
    """Not in the (empty) Hub cache: offline mode set, or the Hub unreachable (a closed local port
    stands in for it), ends in one line saying how to get the model, before anything is built."""
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": offline, "HF_ENDPOINT": "http://127.0.0.1:9"}
    start = time.perf_counter()
    result = rlx_train("model=qwen3_0_6b", f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                       f"cache_dir={tmp_path}/cache", cwd=tmp_path, env=env, timeout=300)
    elapsed = time.perf_counter() - start
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.path='Qwen/Qwen3-0.6B': not in the local Hugging Face cache" in lines[0]
    assert "huggingface-cli download Qwen/Qwen3-0.6B" in lines[0]
    assert elapsed < 30 and not (tmp_path / "mlflow.db").exists()


# ------------------------------------------------------------------------------ sweeps as parents
def sweep_runs(store: Path):
    """(parent runs, child runs) of the experiment 'expression' in the store."""
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("expression")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    return ([r for r in runs if r.data.tags.get("rlx.kind") == "sweep"],
            [r for r in runs if r.data.tags.get("rlx.kind") != "sweep"])


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "local_parallel"])
def test_sweep_is_one_parent_run_with_named_children(tmp_path, cache_dir, launcher):
    if launcher == "local_parallel":
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    extra = [] if launcher == "basic" else ["hydra/launcher=local_parallel"]
    result = rlx_train(
        "--multirun", *extra, "algorithm=grpo,repo_r", "seed=0,1", "experiment=debug", "trainer.max_steps=1",
        "trainer.num_threads=1", "eval.samples_per_prompt=1", "eval.k=[1]", "sweep_id=ux-test",
        f"cache_dir={cache_dir}", f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"logger.artifact_location={tmp_path}/artifacts", f"checkpoint.dir={tmp_path}/checkpoints",
        f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    parents, children = sweep_runs(tmp_path)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "sweep ux-test"
    assert parent.data.tags["rlx.sweep_parent"] == "ux-test" and "sweep_id" not in parent.data.tags
    assert parent.data.tags["rlx.swept_keys"] == "algorithm,seed"
    assert parent.data.params["sweep.algorithm"] == "grpo,repo_r" and parent.data.params["sweep.seed"] == "0,1"
    assert sorted(r.info.run_name for r in children) == ["grpo-s0", "grpo-s1", "repo_r+grpo-s0", "repo_r+grpo-s1"]
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["sweep_id"] == "ux-test" and run.info.status == "FINISHED"
        assert run.data.tags[NOTE_TAG].startswith(f"**{run.data.tags['algorithm']}**")

    # rlx-compare --sweep-id selects the four jobs and puts its table and plots on the parent
    compare = subprocess.run(
        [sys.executable, "-m", "rlx.compare", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
         "--sweep-id", "ux-test", "--out", str(tmp_path / "compare")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert compare.returncode == 0, compare.stderr[-3000:]
    assert compare.stdout.startswith("4 runs in 2 groups")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "compare")}
    assert {"compare/results.md", "compare/results.csv", "compare/entropy_vs_iteration.png"} <= logged
    assert client.get_experiment_by_name("rlx-compare") is None

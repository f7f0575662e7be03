"""Launcher and sweeper presets compose (`--cfg` / `--info`), with SLURM resources taken from the
Lightning trainer keys; and a joblib multirun runs each job as its own process and MLflow run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rlx.config import CONF_DIR

ROOT = CONF_DIR.parent
PLUGINS = {"local_parallel": "hydra_plugins.hydra_joblib_launcher", "slurm": "hydra_plugins.hydra_submitit_launcher",
           "optuna_repo": "hydra_plugins.hydra_optuna_sweeper", "optuna_adapo": "hydra_plugins.hydra_optuna_sweeper"}


def needs(plugin: str):
    missing = importlib.util.find_spec(PLUGINS[plugin]) is None
    return pytest.mark.skipif(missing, reason=f"{PLUGINS[plugin]} is not installed (pip install -e '.[sweeps,slurm]')")


def hydra_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    OmegaConf.resolve(cfg)
    return cfg


def cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "rlx.train", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@needs("slurm")
def test_slurm_preset_takes_nodes_and_gpus_from_the_trainer():
    cfg = hydra_config("hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)
    assert cfg.trainer.strategy == "ddp"


@needs("local_parallel")
def test_local_parallel_preset_runs_jobs_in_processes():
    launcher = hydra_config("hydra/launcher=local_parallel").hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher")
    assert launcher.backend == "loky" and launcher.prefer == "processes" and launcher.n_jobs == 2


@needs("optuna_repo")
@pytest.mark.parametrize("preset,algorithm,keys", [
    ("optuna_repo", "repo_r", ["algorithm.regulator.zeta_min", "algorithm.regulator.zeta_max"]),
    ("optuna_adapo", "adapo", ["algorithm.regulator.factor", "algorithm.regulator.eps_max"]),
])
def test_optuna_presets_search_existing_keys(preset, algorithm, keys):
    cfg = hydra_config(f"hydra/sweeper={preset}", f"algorithm={algorithm}")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sorted(sweeper.params) == sorted(keys)
    for key in keys:  # every searched key exists in the composed job config
        assert OmegaConf.select(cfg, key) is not None, key


@needs("slurm")
def test_cli_cfg_and_info_show_the_presets():
    out = cli("--cfg", "all", "--resolve", "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8")
    assert "SlurmLauncher" in out and "gpus_per_node: 8" in out and "tasks_per_node: 8" in out
    out = cli("--cfg", "job", "trainer=fsdp", "model=qwen3_32b")
    assert "name: fsdp" in out and "path: Qwen/Qwen3-32B" in out and "enabled: true" in out
    out = cli("--info", "defaults", "hydra/launcher=local_parallel", "hydra/sweeper=optuna_repo")
    assert "hydra/launcher/local_parallel" in out and "hydra/sweeper/optuna_repo" in out


@needs("local_parallel")
@pytest.mark.slow
def test_joblib_multirun_jobs_are_separate_processes_and_mlflow_runs(tmp_path, cache_dir):
    from mlflow.tracking import MlflowClient

    from rlx.build import instantiate_task, task_identity
    from rlx.warmstart import base_policy

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=debug"])
    base_policy(instantiate_task(cfg.task), task_identity(cfg.task), cfg.model, cfg.task.warmstart, cache_dir)
    # a new store: the parallel jobs create it (and the experiment) together, safely (rlx.store)
    cli("--multirun", "hydra/launcher=local_parallel", "experiment=debug", "trainer.max_steps=1",
        "trainer.num_threads=1", "eval.samples_per_prompt=1", "eval.k=[1]", "seed=0,1", "sweep_id=joblib-test",
        f"cache_dir={cache_dir}", f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"logger.artifact_location={tmp_path}/artifacts", f"checkpoint.dir={tmp_path}/checkpoints",
        f"hydra.sweep.dir={tmp_path}/sweep")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("expression").experiment_id])
    parents = [r for r in runs if r.data.tags.get("rlx.kind") == "sweep"]  # the sweep's parent run (rlx.sweep)
    runs = [r for r in runs if r not in parents]
    assert len(parents) == 1 and {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    assert {r.data.tags["sweep_id"] for r in runs} == {"joblib-test"}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert sorted(p.name for p in Path(tmp_path / "sweep").iterdir() if p.name.isdigit()) == ["0", "1"]


def test_ddp_inside_a_multirun_job_is_refused_before_any_model(tmp_path):
    """Lightning must not start ranks from the sweep's process tree: DDP in a sweep goes through the
    SLURM launcher (ranks from srun) or torchrun per job."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "SLURM_PROCID", "LOCAL_RANK")}
    result = subprocess.run(
        [sys.executable, "-m", "rlx.train", "--multirun", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
         f"cache_dir={tmp_path}/cache", f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
         f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**env, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert "inside a --multirun job" in result.stderr and "hydra/launcher=slurm" in result.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("overrides,key", [
    (["trainer.strategy=dpp"], "trainer.strategy"),
    (["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=3"], "task.prompts_per_step"),
])
def test_bad_trainer_values_fail_before_any_model(make_config, tmp_path, overrides, key):
    from rlx.config import ConfigError
    from rlx.train import train

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train(make_config(*overrides, f"cache_dir={tmp_path}"))
    assert not list(tmp_path.iterdir())

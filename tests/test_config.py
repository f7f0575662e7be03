"""Config composition for every config file, and validation before any model is built."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from rlx.config import CONF_DIR, ConfigError, validate

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group,choice", [(g, c) for g in GROUPS for c in choices(g)])
def test_every_config_file_composes_and_validates(make_config, group, choice):
    cfg = make_config(f"{group}={choice}", debug=group != "experiment")
    OmegaConf.resolve(cfg)  # every interpolation resolves
    validate(cfg)


@pytest.mark.parametrize("base", ["grpo", "dapo", "rloo"])
def test_repo_r_composes_with_any_base(make_config, base):
    cfg = make_config("algorithm=repo_r", f"algorithm.base={base}")
    base_cfg = OmegaConf.load(CONF_DIR / "algorithm" / f"{base}.yaml")
    for key in ("advantage", "loss", "loss_agg_mode", "clip_ratio_high", "ppo_epochs", "num_minibatches"):
        assert cfg.algorithm[key] == base_cfg[key], key
    assert cfg.algorithm.regulator.name == "repo_r"


def test_explicit_override_beats_the_base(make_config):
    cfg = make_config("algorithm=repo_r", "algorithm.base=dapo", "algorithm.clip_ratio_high=0.4")
    assert cfg.algorithm.clip_ratio_high == 0.4
    assert cfg.algorithm.loss_agg_mode == "token-mean"


BAD_VALUES = [
    (["algorithm=grpo", "algorithm.clip_ratio_low=-0.1"], "algorithm.clip_ratio_low"),
    (["algorithm=grpo", "algorithm.clip_ratio_high=-0.2"], "algorithm.clip_ratio_high"),
    (["algorithm=grpo", "algorithm.clip_ratio_low=1.5"], "algorithm.clip_ratio_low"),
    (["algorithm=grpo", "algorithm.clip_ratio_c=0.5"], "algorithm.clip_ratio_c"),
    (["algorithm=repo_r", "algorithm.regulator.zeta_min=0.5", "algorithm.regulator.zeta_max=0.1"],
     "algorithm.regulator.zeta_min"),
    (["algorithm=repo_r", "algorithm.regulator.zeta_min=0"], "algorithm.regulator.zeta_min"),
    (["algorithm=grpo", "algorithm.group_size=1"], "algorithm.group_size"),
    (["algorithm=rloo", "algorithm.group_size=1"], "algorithm.group_size"),
    (["algorithm=grpo", "algorithm.loss=nope"], "algorithm.loss"),
    (["algorithm=grpo", "algorithm.advantage=nope"], "algorithm.advantage"),
    (["algorithm=grpo", "algorithm.loss_agg_mode=mean"], "algorithm.loss_agg_mode"),
    (["algorithm=adapo", "algorithm.regulator.eps_min=0.5", "algorithm.regulator.eps_max=0.2"],
     "algorithm.regulator.eps_min"),
    (["algorithm=adapo", "algorithm.regulator.factor=0.9"], "algorithm.regulator.factor"),
    (["algorithm=repo_r", "algorithm.base=adapo"], "algorithm.base"),
    (["algorithm=repo_r", "algorithm.base=nope"], "algorithm.base"),
    (["trainer.max_steps=0"], "trainer.max_steps"),
    (["rollout.temperature=0"], "rollout.temperature"),
    (["optim.lr=-1"], "optim.lr"),
    (["eval.k=[1,64]"], "eval.k"),
]


@pytest.mark.parametrize("overrides,key", BAD_VALUES, ids=[k for _, k in BAD_VALUES])
def test_bad_values_fail_naming_the_key(make_config, overrides, key):
    cfg = make_config(*overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert key in str(err.value)
    assert "\n" not in str(err.value)


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlx.train", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_cli_prints_composed_config(tmp_path):
    result = run_cli("--cfg", "job", "algorithm=dapo", "seed=3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = OmegaConf.create(result.stdout)
    assert printed.algorithm.name == "dapo" and printed.seed == 3


def test_cli_bad_value_is_one_clear_line_and_builds_nothing(tmp_path):
    result = run_cli("algorithm=grpo", "algorithm.clip_ratio_low=-0.1", f"cache_dir={tmp_path}/cache", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid config: algorithm.clip_ratio_low=-0.1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "outputs" / "mlflow.db").exists()


def test_cli_unknown_algorithm_names_the_choices(tmp_path):
    result = run_cli("algorithm=nope", cwd=tmp_path)
    assert result.returncode != 0
    assert "algorithm" in result.stderr and "grpo" in result.stderr

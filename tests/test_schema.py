"""The schema (rlx.schema) against the config tree: its defaults are the base files' values, and
validate returns every schema key, typed, for every config file."""

from __future__ import annotations

from dataclasses import fields

import pytest
from omegaconf import OmegaConf

from rlx.config import CONF_DIR, validate
from rlx.schema import TASK_TRAINER_KEYS, RunConfig, SequentialConfig

SCHEMA = OmegaConf.structured(RunConfig)

# (schema node, the YAML file whose values are its defaults, node inside that file)
BASE_FILES = [
    ("algorithm", "algorithm/grpo.yaml", None),
    ("precision", "precision/fp32.yaml", None),
    ("model", "model_common.yaml", None),
    ("rollout", "rollout/hf.yaml", None),
    ("rollout", "rollout/vllm.yaml", None),
    ("trainer", "trainer/cpu.yaml", None),
    ("logger", "logger/mlflow.yaml", None),
    ("task.warmstart", "task/expression.yaml", "warmstart"),
    ("sequential", "experiment/sequential.yaml", "sequential"),
    ("", "config.yaml", None),
]


def stated_values(path: str, node: str | None) -> dict:
    """The keys a file states itself (no defaults list, no hydra node, no nested group)."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / path))
    cfg = cfg[node] if node else cfg
    return {k: v for k, v in cfg.items() if k not in ("defaults", "hydra", "phase_b")}


@pytest.mark.parametrize("node,path,inner", BASE_FILES, ids=[p for _, p, _ in BASE_FILES])
def test_schema_defaults_are_the_base_files_values(node, path, inner):
    schema = OmegaConf.select(SCHEMA, node) if node else SCHEMA
    if node == "sequential":  # null unless experiment=sequential
        schema = OmegaConf.structured(SequentialConfig)
    defaults = OmegaConf.to_container(schema)
    stated = stated_values(path, inner)
    assert stated, path
    unknown = sorted(set(stated) - set(defaults))
    assert unknown == [], f"{path} states keys the schema lacks"
    differ = {k: (v, defaults[k]) for k, v in stated.items() if v != defaults[k]}
    if path == "rollout/vllm.yaml":
        differ.pop("backend")  # vllm's one difference from the default backend
    assert differ == {}, f"{path} and rlx.schema disagree (file, schema)"


def test_task_trainer_keys_are_the_schema_task_fields():
    task_fields = {f.name for f in fields(RunConfig.__dataclass_fields__["task"].default_factory())}
    assert task_fields == {"_target_", "name", *TASK_TRAINER_KEYS}


OPEN_NODES = ("algorithm.regulator", "algorithm.loss_kwargs", "model.chat_template_kwargs", "trainer.strategy",
              "sequential.phase_b")


def config_keys(tree: dict, prefix: str = "") -> set[str]:
    """Dotted keys of a container, not descending into the open nodes."""
    keys = set()
    for k, v in tree.items():
        keys.add(f"{prefix}{k}")
        if isinstance(v, dict) and f"{prefix}{k}" not in OPEN_NODES:
            keys |= config_keys(v, f"{prefix}{k}.")
    return keys


ALL_KEYS = config_keys(OmegaConf.to_container(SCHEMA))


@pytest.mark.parametrize("overrides", [
    ["algorithm=grpo"], ["algorithm=loop"], ["algorithm=repo_r", "algorithm.base=rloo"], ["model=qwen3_8b"],
    ["model=smollm2_135m"], ["rollout=vllm"], ["trainer=fsdp"], ["task=toolworld"], ["task=custom"],
    ["precision=bf16_true_logp_bf16_old_trainer"],
], ids=" ".join)
def test_validate_returns_every_schema_key_typed(make_config, overrides):
    checked = validate(make_config(*overrides, debug=False))
    keys = config_keys(OmegaConf.to_container(checked))
    assert ALL_KEYS - keys == set(), "schema keys missing from the validated config"
    extra = {k for k in keys - ALL_KEYS if not k.startswith("task.")}  # the task's constructor keys are open
    assert extra == set()
    assert isinstance(checked.algorithm.clip_ratio_low, float) and isinstance(checked.trainer.max_steps, int)
    assert checked.task._target_.startswith("rlx.tasks.")


def test_the_sequential_experiment_is_typed(make_config):
    checked = validate(make_config("experiment=sequential", debug=False))
    assert checked.sequential.phase_b_steps == 50 and "expression" in checked.sequential.phase_b
    assert validate(make_config("algorithm=grpo")).sequential is None

"""The config contract: `validate(cfg)` checks a composed config once, before any model or MLflow
run exists, and returns it typed, with every key of rlx.schema present (defaults filled).

A value that cannot work raises ConfigError with one line naming the key, the value and what is
allowed, e.g. `algorithm.clip_ratio_low='abc': must be a float`. Types and defaults live in
rlx.schema; the name lists come from the registries that use them (rlx.objectives, rlx.precision,
rlx.models, rlx.rollout), and a regulator's options are checked by its own class
(rlx.regulators.build_regulator).
"""

from __future__ import annotations

import os
import re
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (ConfigKeyError, InterpolationResolutionError, MissingMandatoryValue,
                              OmegaConfBaseException)

from rlx.errors import ConfigError  # noqa: F401 - re-exported: rlx.config.ConfigError
from rlx.schema import SCRATCH_KEYS, TASK_TRAINER_KEYS, RunConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# Lightning strategies trainer.strategy may name (a node {name: fsdp, ...} configures FSDP)
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp", "deepspeed")
ROLLOUT_BACKENDS = ("hf", "vllm")
OLD_LOGPROBS = ("trainer", "sampler")
# policy-loss keys the learner fills at run time, never from algorithm.loss_kwargs
RUNTIME_LOSS_KEYS = ("entropy", "ref_logprobs", "global_tokens", "global_seqs", "generator", "rollout_is_weights")

__all__ = ["CONF_DIR", "ConfigError", "STRATEGIES", "TASK_TRAINER_KEYS", "base_names", "processes", "typed",
           "validate"]


def register_resolvers() -> None:
    """No-op, kept for callers written when base objectives came through a `${rlx_base:KEY}`
    resolver; they now compose through Hydra's defaults list (conf/algorithm.base/)."""


def base_names() -> list[str]:
    """The objectives an entropy regulator can sit on: `algorithm.base=<name>` (conf/algorithm.base/)."""
    return sorted(p.stem for p in (CONF_DIR / "algorithm.base").glob("*.yaml") if p.stem != "none")


# --------------------------------------------------------------------------- types and defaults
_TYPE_NAMES = {float: "a float", int: "an integer", bool: "a boolean (true / false)", str: "a string"}


def _path(full_key: str) -> list[str | int]:
    """'eval.k[1]' -> ['eval', 'k', 1]."""
    return [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", full_key)]


def _lookup(tree: Any, path: list) -> Any:
    for part in path:
        try:
            tree = tree[part]
        except (KeyError, IndexError, TypeError):
            return None
    return tree


def _strip_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp


def _schema_type(path: list) -> Any:
    """The annotation of the schema key at `path` (None where the schema leaves the node open)."""
    tp: Any = RunConfig
    for part in path:
        tp = _strip_optional(tp)
        if is_dataclass(tp):
            tp = typing.get_type_hints(tp).get(part)
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
        else:
            return None
    return tp


def _type_name(tp: Any) -> str:
    """'a float', 'an integer or null', 'a list of integers', ..."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union:
        text = " or ".join(_type_name(a) for a in args if a is not type(None))
        return text + " or null" if type(None) in args else text
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(args[0]).split(' ', 1)[1]}s"
    if typing.get_origin(tp) is dict or is_dataclass(tp):
        return "a mapping"
    return _TYPE_NAMES.get(tp, "a valid value")


def _one_line(exc: OmegaConfBaseException, raw: dict) -> ConfigError:
    """An OmegaConf error from merging `raw` onto the schema, as `key=value: what is allowed`."""
    key = str(exc.full_key or getattr(exc, "key", "") or "")
    path = _path(key)
    value = _lookup(raw, path)
    reason = str(getattr(exc, "msg", exc)).splitlines()[0]
    if isinstance(exc, MissingMandatoryValue):
        return ConfigError(f"{key}=???: required, must be {_type_name(_schema_type(path))}")
    if isinstance(exc, InterpolationResolutionError):
        return ConfigError(f"{key}={value!r}: the interpolation cannot be resolved ({reason})")
    if isinstance(exc, ConfigKeyError):
        parent = _strip_optional(_schema_type(path[:-1]))
        allowed = [f.name for f in fields(parent)] if is_dataclass(parent) else []
        where = ".".join(str(p) for p in path[:-1]) or "the top level"
        return ConfigError(f"{key}={value!r}: no such key in {where}; allowed: {allowed}")
    tp = _schema_type(path)
    if tp is not None:
        return ConfigError(f"{key}={value!r}: must be {_type_name(tp)}")
    return ConfigError(f"{key}={value!r}: {reason}")


def typed(cfg: DictConfig | dict) -> DictConfig:
    """`cfg` merged onto rlx.schema.RunConfig: every schema key present, typed and defaulted, every
    interpolation resolvable (they are kept, not resolved). A `hydra` node is left out."""
    raw = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else dict(cfg)
    raw.pop("hydra", None)
    schema = OmegaConf.structured(RunConfig)
    OmegaConf.set_struct(schema.task, False)  # the task's constructor keys are open
    try:
        checked = OmegaConf.merge(schema, raw)
        OmegaConf.to_container(checked, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise _one_line(exc, raw) from exc
    return checked


# --------------------------------------------------------------------------- rules between keys
def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {allowed}")


def _one_of(key: str, value: Any, allowed) -> None:
    _require(value in allowed, key, value, f"allowed: {list(allowed)}")


def _at_least(node: DictConfig, prefix: str, minimum: int, *keys: str, optional: bool = False) -> None:
    for k in keys:
        value = node[k]
        ok = (optional and value is None) or (value is not None and value >= minimum)
        _require(ok, f"{prefix}.{k}", value, f"must be >= {minimum}" + (" or null" if optional else ""))


def check_algorithm(alg: DictConfig) -> None:
    """Names known to the objective registries, clip ratios sane, loss_kwargs the loss takes."""
    from rlx.objectives import ADVANTAGE_ESTIMATORS, KL_TYPES, LOSS_AGG_MODES, POLICY_LOSSES, policy_loss_keys
    from rlx.objectives.advantages import GRPO_SCALES

    _one_of("algorithm.advantage", alg.advantage, sorted(ADVANTAGE_ESTIMATORS))
    _one_of("algorithm.adv_scale", alg.adv_scale, GRPO_SCALES)
    _one_of("algorithm.loss", alg.loss, sorted(POLICY_LOSSES))
    _one_of("algorithm.loss_agg_mode", alg.loss_agg_mode, LOSS_AGG_MODES)
    _one_of("algorithm.kl_loss_type", alg.kl_loss_type, KL_TYPES)
    _require(alg.group_size >= 2, "algorithm.group_size", alg.group_size,
             f"must be >= 2: the {alg.advantage} advantage compares samples within a group")
    for key in ("clip_ratio_low", "clip_ratio_high"):
        _require(alg[key] > 0, f"algorithm.{key}", alg[key], "must be > 0 (0 would freeze the ratio at 1: no "
                 "token could move past the old policy on that side)")
    for key in ("entropy_coeff", "kl_loss_coef"):
        _require(alg[key] >= 0, f"algorithm.{key}", alg[key], "must be >= 0")
    _require(alg.clip_ratio_low <= 1, "algorithm.clip_ratio_low", alg.clip_ratio_low,
             "must be <= 1 (the lower bound 1 - clip_ratio_low would be negative: the clip interval is inverted)")
    if alg.clip_ratio_c is not None:
        _require(alg.clip_ratio_c > 1, "algorithm.clip_ratio_c", alg.clip_ratio_c, "dual-clip bound must be > 1 (or null)")
    _at_least(alg, "algorithm", 1, "ppo_epochs", "num_minibatches")
    accepted = [k for k in policy_loss_keys(alg.loss) if k not in RUNTIME_LOSS_KEYS and k not in alg]
    for key, value in alg.loss_kwargs.items():
        _require(key not in alg, f"algorithm.loss_kwargs.{key}", value, f"set algorithm.{key} instead")
        _require(key in accepted, f"algorithm.loss_kwargs.{key}", value, f"not a key of loss {alg.loss!r}; "
                 f"allowed: {accepted}")
    check_base(alg)
    check_regulator(alg.regulator, alg.loss)


def check_base(alg: DictConfig) -> None:
    """algorithm.base names the objective under a regulator's file (conf/algorithm.base/); an
    objective's own file takes none, so `algorithm=grpo algorithm.base=dapo` (which would run GRPO's
    keys tagged as DAPO) fails, and a regulator's file needs one (else its objective keys would be
    the schema's defaults). A regulator on an objective's file (algorithm=grpo
    algorithm.regulator.name=...) has base null: the objective is the file's own."""
    objective = alg.name in base_names()
    if alg.base is not None and objective:
        raise ConfigError(f"algorithm.base={alg.base!r}: algorithm={alg.name} is itself a base objective, it takes "
                          f"no base; run algorithm={alg.base}, or a regulator on it: algorithm=repo_r "
                          f"algorithm.base={alg.base}")
    if alg.base is None and not objective and alg.regulator.name != "none":
        raise ConfigError(f"algorithm.base=None: algorithm={alg.name} puts a regulator on a base objective, "
                          f"allowed: {base_names()} (its file's defaults list picks one: - override "
                          "/algorithm.base@_global_.algorithm.base: grpo)")


def check_regulator(reg: DictConfig, loss: str) -> None:
    """The regulator class checks its own options (one-line ConfigError naming algorithm.regulator.<key>);
    every loss key it overrides must be one the loss takes (ADAPO's clip_ratio_high has no effect
    on reinforce, loop or kl_cov)."""
    from rlx.objectives import policy_loss_keys
    from rlx.regulators import build_regulator

    regulator = build_regulator(OmegaConf.to_container(reg, resolve=True))
    ignored = sorted(set(regulator.loss_overrides()) - set(policy_loss_keys(loss)))
    _require(not ignored, "algorithm.regulator.name", reg.name,
             f"sets {ignored} for the loss, which algorithm.loss={loss!r} does not take: pick a base whose "
             "loss clips (e.g. algorithm.base=dapo)")


def check_precision(prec: DictConfig) -> None:
    """A Lightning precision flag, known dtypes, a known old-log-prob source."""
    from rlx.precision import DTYPES, TRAINER_PRECISIONS

    _one_of("precision.trainer_precision", prec.trainer_precision, TRAINER_PRECISIONS)
    for key in ("sampler_dtype", "logprob_dtype"):
        _one_of(f"precision.{key}", prec[key], sorted(DTYPES))
    _one_of("precision.old_logprobs", prec.old_logprobs, OLD_LOGPROBS)
    _at_least(prec, "precision", 0, "diagnostics_sample")


def check_rollout_correction(cfg: DictConfig) -> None:
    """algorithm.rollout_correction: known levels, positive thresholds, and the sampler's log-probs
    to compare with the trainer's (rlx's sampler or HF generate, old log-probs from the trainer:
    with precision.old_logprobs=sampler the weight pi_old / pi_sampler is 1 by construction)."""
    from rlx.objectives import ROLLOUT_IS_LEVELS, ROLLOUT_RS_LEVELS

    rc, key = cfg.algorithm.rollout_correction, "algorithm.rollout_correction"
    if rc.rollout_is is not None:
        _one_of(f"{key}.rollout_is", rc.rollout_is, ROLLOUT_IS_LEVELS)
    if rc.rollout_rs is not None:
        _one_of(f"{key}.rollout_rs", rc.rollout_rs, ROLLOUT_RS_LEVELS)
    _require(rc.rollout_is_threshold > 0, f"{key}.rollout_is_threshold", rc.rollout_is_threshold, "must be > 0")
    upper = rc.rollout_is_threshold if rc.rollout_rs_threshold is None else rc.rollout_rs_threshold
    _require(upper > 0, f"{key}.rollout_rs_threshold", rc.rollout_rs_threshold, "must be > 0 (or null)")
    lower = rc.rollout_rs_threshold_lower
    _require(lower is None or 0 <= lower <= upper, f"{key}.rollout_rs_threshold_lower", lower,
             f"must be in [0, rollout_rs_threshold={upper}] (or null: 1 / rollout_rs_threshold)")
    if rc.rollout_is is None and rc.rollout_rs is None:
        return
    on = f"{key}.rollout_is" if rc.rollout_is is not None else f"{key}.rollout_rs"
    _require(cfg.precision.old_logprobs == "trainer", "precision.old_logprobs", cfg.precision.old_logprobs,
             f"{on} corrects the trainer's old log-probs toward the sampler's: needs old_logprobs=trainer "
             "(with the sampler's as old log-probs the weight is 1)")
    _require(cfg.rollout.backend == "hf", "rollout.backend", cfg.rollout.backend,
             f"{on} needs the sampler's log-probs: rollout.backend=hf (vLLM returns none)")


def check_model(model: DictConfig) -> None:
    """A known source; a pretrained model has a path, a model built from config its architecture."""
    from rlx.models import _ARCHITECTURES, DTYPES, SOURCES

    _one_of("model.source", model.source, SOURCES)
    if model.source == "pretrained":
        _require(bool(model.path), "model.path", model.path, "a pretrained model needs a Hugging Face id or a "
                 "local directory (e.g. model.path=Qwen/Qwen3-0.6B or model.path=/data/ckpt)")
    if model.source == "scratch":
        for key in SCRATCH_KEYS:
            _require(model[key] is not None, f"model.{key}", None, "required by a model built from config "
                     "(model.source=scratch)")
        _one_of("model.architecture", model.architecture, sorted(_ARCHITECTURES))
        _at_least(model, "model", 1, "hidden_size", "num_layers", "num_heads", "intermediate_size",
                  "max_position_embeddings")
    _one_of("model.dtype", model.dtype, list(DTYPES))
    _one_of("model.chat_template", model.chat_template, ("auto", True, False))
    lora = model.lora
    if lora.enabled:
        _at_least(lora, "model.lora", 1, "r")
        _require(lora.alpha > 0, "model.lora.alpha", lora.alpha, "must be > 0")
        _require(0 <= lora.dropout < 1, "model.lora.dropout", lora.dropout, "must be in [0, 1)")
        modules = lora.target_modules
        _require(modules == "all-linear" or (OmegaConf.is_list(modules) and all(isinstance(m, str) for m in modules)),
                 "model.lora.target_modules", modules, "a list of module names (e.g. [q_proj, v_proj]) or 'all-linear'")


def check_rollout(ro: DictConfig) -> None:
    from rlx.rollout import SAMPLERS

    _one_of("rollout.backend", ro.backend, ROLLOUT_BACKENDS)
    _one_of("rollout.sampler", ro.sampler, sorted(SAMPLERS))
    _at_least(ro, "rollout", 1, "max_new_tokens")
    _at_least(ro, "rollout", 1, "max_model_len", optional=True)
    _at_least(ro, "rollout", 0, "top_k")
    _require(ro.temperature > 0, "rollout.temperature", ro.temperature, "must be > 0")
    _require(0 < ro.top_p <= 1, "rollout.top_p", ro.top_p, "must be in (0, 1]")
    _require(0 < ro.gpu_memory_utilization <= 1, "rollout.gpu_memory_utilization", ro.gpu_memory_utilization,
             "must be in (0, 1]")


def processes(trainer: DictConfig) -> int:
    """Processes of a run: trainer.devices x trainer.num_nodes (1 for devices=auto / -1 / a list on one CPU)."""
    devices = trainer.devices
    return int(devices) * int(trainer.num_nodes) if isinstance(devices, int) and devices > 0 else 1


def check_trainer(cfg: DictConfig) -> None:
    """A known strategy, whole groups per rank, no multi-process job launched from a local sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    trainer = cfg.trainer
    strategy = trainer.strategy
    if OmegaConf.is_dict(strategy):
        _require(strategy.get("name") == "fsdp", "trainer.strategy.name", strategy.get("name"),
                 "a strategy node configures FSDP: name: fsdp (or give a name: trainer.strategy=ddp)")
    else:
        _one_of("trainer.strategy", strategy, STRATEGIES)
    _at_least(trainer, "trainer", 1, "max_steps", "num_nodes", "micro_batch_size")
    _at_least(trainer, "trainer", 1, "micro_batch_tokens", "num_threads", optional=True)
    world = processes(trainer)
    _require(cfg.task.prompts_per_step % world == 0, "task.prompts_per_step", cfg.task.prompts_per_step,
             f"must be divisible by the number of processes (trainer.devices x trainer.num_nodes = {world}); "
             "each rank samples whole groups")
    launched_externally = any(key in os.environ for key in ("RANK", "SLURM_PROCID"))  # torchrun / srun
    if world > 1 and not launched_externally and HydraConfig.initialized() and \
            HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ConfigError(f"trainer.devices={trainer.devices!r}: trainer.devices x trainer.num_nodes = {world} inside "
                          "a --multirun job would start the ranks from the sweep's own process tree; use "
                          "hydra/launcher=slurm (one task per device, ranks from SLURM) or run each job with "
                          "torchrun --nproc-per-node")


def check_run(cfg: DictConfig) -> None:
    """Batch sizes, learning rate, evaluation, checkpoints and the sequential experiment."""
    _at_least(cfg.task, "task", 1, "prompts_per_step")
    timeout = cfg.task.reward_timeout_s
    _require(timeout is None or timeout > 0, "task.reward_timeout_s", timeout, "must be > 0 seconds, or null (no limit)")
    _at_least(cfg.guard, "guard", 1, "nonfinite_patience", "reward_failure_patience")
    _at_least(cfg.guard, "guard", 0, "divergence_patience")
    _at_least(cfg.task.warmstart, "task.warmstart", 0, "steps")
    _at_least(cfg.task.warmstart, "task.warmstart", 1, "batch_size")
    batch = cfg.task.prompts_per_step * cfg.algorithm.group_size
    _require(cfg.algorithm.num_minibatches <= batch, "algorithm.num_minibatches", cfg.algorithm.num_minibatches,
             f"must be <= the rollout batch (task.prompts_per_step x algorithm.group_size = {batch})")
    _require(cfg.optim.lr > 0, "optim.lr", cfg.optim.lr, "must be > 0")
    _require(cfg.eval_every >= 0, "eval_every", cfg.eval_every, "must be >= 0 (0 = only at the start and the end)")
    _at_least(cfg.checkpoint, "checkpoint", 1, "every")
    check_checkpoint_export(cfg)
    _at_least(cfg.eval, "eval", 1, "samples_per_prompt", "batch_size")
    _at_least(cfg.monitor, "monitor", 1, "chunk_size")
    k = list(cfg.eval.k)
    _require(bool(k) and all(n >= 1 for n in k), "eval.k", k, "every k must be >= 1")
    _require(max(k) <= cfg.eval.samples_per_prompt, "eval.k", k,
             f"every k must be <= eval.samples_per_prompt={cfg.eval.samples_per_prompt}")
    if cfg.sequential is not None:
        _at_least(cfg.sequential, "sequential", 1, "phase_b_steps", "gain_after", "window")


def check_checkpoint_export(cfg: DictConfig) -> None:
    """How many checkpoints are kept and by which metric; the export's dtype and registry name."""
    from rlx.checkpoints import MODES
    from rlx.export import DTYPES

    ckpt = cfg.checkpoint
    _require(ckpt.keep_last >= -1, "checkpoint.keep_last", ckpt.keep_last,
             "must be >= 0 (periodic checkpoints kept besides last.ckpt) or -1 (all)")
    _one_of("checkpoint.keep_best_mode", ckpt.keep_best_mode, MODES)
    if ckpt.keep_best_by is not None:
        _require("/" in ckpt.keep_best_by, "checkpoint.keep_best_by", ckpt.keep_best_by,
                 "a logged metric name, e.g. eval/pass_at_1 or train/reward_mean (or null)")
    _one_of("export.dtype", cfg.export.dtype, list(DTYPES))
    if cfg.export.register_as is not None:
        _require(bool(str(cfg.export.register_as).strip()), "export.register_as", cfg.export.register_as,
                 "a registered model name (or null)")


def validate(cfg: DictConfig) -> DictConfig:
    """The checked config: every key of rlx.schema present and typed (defaults filled), every rule
    between keys holding. Raises ConfigError on the first problem; builds nothing."""
    checked = typed(cfg)
    check_algorithm(checked.algorithm)
    check_precision(checked.precision)
    check_rollout_correction(checked)
    check_model(checked.model)
    check_rollout(checked.rollout)
    check_trainer(checked)
    check_run(checked)
    return checked

"""Config conventions: the algorithm-base resolver and validation before any model is built."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

ADVANTAGES = ("grpo", "rloo", "loop", "dr_grpo")
REGULATORS = ("none", "repo_r", "repo_d", "adapo", "entropy_bonus", "adaptive_entropy")
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
KL_TYPES = ("k1", "k2", "k3")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what is allowed."""


@lru_cache(maxsize=None)
def _algorithm_file(name: str) -> DictConfig:
    path = CONF_DIR / "algorithm" / f"{name}.yaml"
    if not path.exists():
        allowed = sorted(p.stem for p in (CONF_DIR / "algorithm").glob("*.yaml"))
        raise ConfigError(f"algorithm.base={name!r}: no such algorithm; allowed: {allowed}")
    return OmegaConf.load(path)


def base_value(key: str, _parent_: DictConfig) -> Any:
    """Resolver `${rlx_base:KEY}`: the value of KEY in the base objective named by the
    algorithm's `base` key, so `algorithm=repo_r algorithm.base=dapo` puts REPO on DAPO."""
    base = _parent_.get("base")
    base_cfg = _algorithm_file(str(base))
    if base_cfg.get("base") is not None or base_cfg.regulator.name != "none":
        raise ConfigError(f"algorithm.base={base!r}: a base must be a plain objective (grpo, dapo, rloo, ...), "
                          f"not an entropy regulator")
    return base_cfg[key]


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("rlx_base"):
        OmegaConf.register_new_resolver("rlx_base", base_value)


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {allowed}")


def _allowed_losses() -> tuple[str, ...]:
    from rlx.objectives import POLICY_LOSSES

    return tuple(sorted(POLICY_LOSSES))


def validate_algorithm(alg: DictConfig) -> None:
    """Checks of the algorithm group: names known, clip ratios sane, controller bounds ordered."""
    _require(alg.advantage in ADVANTAGES, "algorithm.advantage", alg.advantage, f"allowed: {list(ADVANTAGES)}")
    losses = _allowed_losses()
    _require(alg.loss in losses, "algorithm.loss", alg.loss, f"allowed: {list(losses)}")
    _require(alg.loss_agg_mode in LOSS_AGG_MODES, "algorithm.loss_agg_mode", alg.loss_agg_mode,
             f"allowed: {list(LOSS_AGG_MODES)}")
    _require(alg.kl_loss_type in KL_TYPES, "algorithm.kl_loss_type", alg.kl_loss_type, f"allowed: {list(KL_TYPES)}")
    _require(alg.group_size >= 2, "algorithm.group_size", alg.group_size,
             f"must be >= 2: the {alg.advantage} advantage compares samples within a group")
    for key in ("clip_ratio_low", "clip_ratio_high"):
        _require(alg[key] >= 0, f"algorithm.{key}", alg[key], "must be >= 0")
    _require(alg.clip_ratio_low <= 1, "algorithm.clip_ratio_low", alg.clip_ratio_low,
             "must be <= 1 (the lower bound 1 - clip_ratio_low would be negative: the clip interval is inverted)")
    if alg.clip_ratio_c is not None:
        _require(alg.clip_ratio_c > 1, "algorithm.clip_ratio_c", alg.clip_ratio_c, "dual-clip bound must be > 1 (or null)")
    _require(alg.ppo_epochs >= 1, "algorithm.ppo_epochs", alg.ppo_epochs, "must be >= 1")
    _require(alg.num_minibatches >= 1, "algorithm.num_minibatches", alg.num_minibatches, "must be >= 1")
    for key in ("entropy_coeff", "kl_loss_coef"):
        _require(alg[key] >= 0, f"algorithm.{key}", alg[key], "must be >= 0")
    validate_regulator(alg.regulator)


def validate_regulator(reg: DictConfig) -> None:
    """Bounds of the entropy controllers: 0 < min <= max, start inside the bounds, factor > 1."""
    _require(reg.name in REGULATORS, "algorithm.regulator.name", reg.name, f"allowed: {list(REGULATORS)}")
    if reg.name in ("repo_r", "repo_d"):
        _require(reg.zeta_min > 0, "algorithm.regulator.zeta_min", reg.zeta_min, "must be > 0")
        _require(reg.zeta_min <= reg.zeta_max, "algorithm.regulator.zeta_min", reg.zeta_min,
                 f"must be <= algorithm.regulator.zeta_max={reg.zeta_max}")
        _require(abs(reg.zeta_init) <= reg.zeta_max, "algorithm.regulator.zeta_init", reg.zeta_init,
                 f"|zeta_init| must be <= zeta_max={reg.zeta_max}")
        _require(reg.target_ratio > 0, "algorithm.regulator.target_ratio", reg.target_ratio, "must be > 0")
    if reg.name == "repo_r":
        _require(reg.variant in ("signed", "positive_only"), "algorithm.regulator.variant", reg.variant,
                 "allowed: ['signed', 'positive_only']")
    if reg.name == "adaptive_entropy":
        _require(0 <= reg.coef_min <= reg.coef_max, "algorithm.regulator.coef_min", reg.coef_min,
                 f"must satisfy 0 <= coef_min <= coef_max={reg.coef_max}")
        _require(reg.delta > 0, "algorithm.regulator.delta", reg.delta, "must be > 0")
    if reg.name == "adapo":
        _require(0 < reg.eps_min <= reg.eps_max, "algorithm.regulator.eps_min", reg.eps_min,
                 f"must satisfy 0 < eps_min <= eps_max={reg.eps_max}")
        _require(reg.eps_min <= reg.eps_init <= reg.eps_max, "algorithm.regulator.eps_init", reg.eps_init,
                 f"must lie in [eps_min, eps_max] = [{reg.eps_min}, {reg.eps_max}]")
        _require(reg.mode in ("multiplicative", "additive"), "algorithm.regulator.mode", reg.mode,
                 "allowed: ['multiplicative', 'additive']")
        if reg.mode == "multiplicative":
            _require(reg.factor > 1, "algorithm.regulator.factor", reg.factor, "must be > 1")
        _require(reg.dead_band >= 0, "algorithm.regulator.dead_band", reg.dead_band, "must be >= 0")


def validate_precision(prec: DictConfig) -> None:
    """Precision keys: a Lightning precision flag, known dtypes, a known old-log-prob source."""
    from rlx.precision import DTYPES, TRAINER_PRECISIONS

    _require(prec.trainer_precision in TRAINER_PRECISIONS, "precision.trainer_precision", prec.trainer_precision,
             f"allowed: {list(TRAINER_PRECISIONS)}")
    for key in ("sampler_dtype", "logprob_dtype"):
        _require(prec[key] in DTYPES, f"precision.{key}", prec[key], f"allowed: {sorted(DTYPES)}")
    _require(prec.old_logprobs in ("trainer", "sampler"), "precision.old_logprobs", prec.old_logprobs,
             "allowed: ['trainer', 'sampler']")
    _require(prec.diagnostics_sample >= 0, "precision.diagnostics_sample", prec.diagnostics_sample, "must be >= 0")


def validate(cfg: DictConfig) -> None:
    """Every check that can fail before a model is built. Raises ConfigError on the first problem."""
    try:
        OmegaConf.resolve(OmegaConf.create(OmegaConf.to_container(cfg.algorithm, resolve=True)))
    except ConfigError:
        raise
    except Exception as exc:  # an interpolation that cannot resolve, e.g. a bad algorithm.base
        cause = exc.__cause__ if isinstance(exc.__cause__, ConfigError) else exc
        raise ConfigError(str(cause).splitlines()[0]) from exc
    validate_algorithm(cfg.algorithm)
    validate_precision(cfg.precision)
    _require(cfg.trainer.max_steps >= 1, "trainer.max_steps", cfg.trainer.max_steps, "must be >= 1")
    _require(cfg.task.prompts_per_step >= 1, "task.prompts_per_step", cfg.task.prompts_per_step, "must be >= 1")
    batch = cfg.task.prompts_per_step * cfg.algorithm.group_size
    _require(cfg.algorithm.num_minibatches <= batch, "algorithm.num_minibatches", cfg.algorithm.num_minibatches,
             f"must be <= the rollout batch (task.prompts_per_step x algorithm.group_size = {batch})")
    _require(cfg.rollout.max_new_tokens >= 1, "rollout.max_new_tokens", cfg.rollout.max_new_tokens, "must be >= 1")
    _require(cfg.rollout.get("sampler", "generate") in ("rlx", "generate"), "rollout.sampler",
             cfg.rollout.get("sampler"), "allowed: rlx | generate")
    _require(cfg.rollout.temperature > 0, "rollout.temperature", cfg.rollout.temperature, "must be > 0")
    _require(cfg.optim.lr > 0, "optim.lr", cfg.optim.lr, "must be > 0")
    _require(cfg.eval_every >= 0, "eval_every", cfg.eval_every, "must be >= 0 (0 = only at the start and the end)")
    _require(cfg.checkpoint.every >= 1, "checkpoint.every", cfg.checkpoint.every, "must be >= 1")
    _require(cfg.trainer.micro_batch_size >= 1, "trainer.micro_batch_size", cfg.trainer.micro_batch_size, "must be >= 1")
    tokens = cfg.trainer.get("micro_batch_tokens")
    _require(tokens is None or tokens >= 1, "trainer.micro_batch_tokens", tokens, "must be >= 1 or null")
    _require(all(k >= 1 for k in cfg.eval.k), "eval.k", list(cfg.eval.k), "every k must be >= 1")
    _require(max(cfg.eval.k) <= cfg.eval.samples_per_prompt, "eval.k", list(cfg.eval.k),
             f"every k must be <= eval.samples_per_prompt={cfg.eval.samples_per_prompt}")

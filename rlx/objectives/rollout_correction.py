"""Sampler/trainer mismatch correction (verl's rollout correction): importance weights
rho = pi_old / pi_sampler between the old log-probs the loss uses (the trainer's recomputation)
and the log-probs the sampler reported for the same tokens, truncated or used to drop outliers
(docs/method.md, "Rollout correction").

Two pure functions, verl's key names:
  rollout_is_weights(lp_old, lp_sampler, m, rollout_is, rollout_is_threshold)
      -> truncated importance sampling (TIS): w = min(rho, C), multiplied into each token's loss
  rollout_rs_mask(lp_old, lp_sampler, m, rollout_rs, rollout_rs_threshold, rollout_rs_threshold_lower)
      -> rejection (masked importance sampling, MIS): tokens / sequences with rho outside
         [lower, upper] leave the loss and its normalisers
Both return (tensor, metrics) with metrics over the valid tokens (and rows) of the call.
"""

from __future__ import annotations

import torch

from ._checks import as_bool_mask, check_same_shape, masked_mean

ROLLOUT_IS_LEVELS = ("token", "sequence")
ROLLOUT_RS_LEVELS = ("token", "sequence", "geometric")
LOG_WEIGHT_CLAMP = 20.0  # rho is bounded to [exp(-20), exp(20)] before anything else (as verl)


def log_rho(old_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, mask: torch.Tensor,
            level: str) -> torch.Tensor:
    """[B, T] log importance weight of each token's level, clamped to [-20, 20], 0 at masked positions:
        token:     d_t = lp_old_t - lp_sampler_t
        sequence:  sum_{t in y_i} d_t        (log of the product of token ratios), broadcast over y_i
        geometric: mean_{t in y_i} d_t       (log of their geometric mean), broadcast over y_i
    fp32 or wider."""
    check_same_shape(old_logprobs=old_logprobs, sampler_logprobs=sampler_logprobs, mask=mask)
    valid = as_bool_mask(mask)
    dt = torch.promote_types(old_logprobs.dtype, torch.float32)
    zero = torch.zeros((), dtype=dt, device=old_logprobs.device)
    d = torch.where(valid, old_logprobs.detach().to(dt) - sampler_logprobs.detach().to(dt), zero)
    if level == "token":
        out = d
    elif level in ("sequence", "geometric"):
        total = d.sum(-1, keepdim=True)
        if level == "geometric":
            total = total / valid.sum(-1, keepdim=True).clamp(min=1)
        out = total.expand_as(d)
    else:
        raise ValueError(f"level={level!r}: allowed {list(ROLLOUT_RS_LEVELS)}")
    return torch.where(valid, out.clamp(-LOG_WEIGHT_CLAMP, LOG_WEIGHT_CLAMP), zero)


def rollout_is_weights(old_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, mask: torch.Tensor,
                       rollout_is: str = "token", rollout_is_threshold: float = 2.0):
    """Truncated importance sampling: w_t = min(rho_t, C), C = rollout_is_threshold,
    rho_t = exp(log_rho(level = rollout_is)) (token: pi_old(y_t) / pi_sampler(y_t); sequence: the
    product over the row, the same weight on each of its tokens). 0 at masked positions; detached.

    metrics (over valid tokens): rollout_is_mean = mean_t w_t (the weight the loss uses),
    rollout_is_max = max_t rho_t (before truncation), rollout_is_ratio_fraction_high = share of
    tokens with rho_t > C (truncated)."""
    if rollout_is not in ROLLOUT_IS_LEVELS:
        raise ValueError(f"rollout_is={rollout_is!r}: allowed {list(ROLLOUT_IS_LEVELS)} (or null: off)")
    if not rollout_is_threshold > 0:
        raise ValueError(f"rollout_is_threshold={rollout_is_threshold!r} is invalid; must be > 0")
    valid = as_bool_mask(mask)
    rho = torch.exp(log_rho(old_logprobs, sampler_logprobs, mask, rollout_is))
    weights = torch.where(valid, rho.clamp(max=rollout_is_threshold), torch.zeros_like(rho))
    high = (rho > rollout_is_threshold) & valid
    metrics = {
        "rollout_is_mean": masked_mean(weights, valid),
        "rollout_is_max": rho[valid].max() if valid.any() else rho.new_zeros(()),
        "rollout_is_ratio_fraction_high": masked_mean(high.to(rho.dtype), valid),
    }
    return weights, metrics


def rollout_rs_mask(old_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, mask: torch.Tensor,
                    rollout_rs: str = "token", rollout_rs_threshold: float = 2.0,
                    rollout_rs_threshold_lower: float | None = None):
    """Rejection (masked importance sampling): keep_t = [lower <= rho_t <= upper] and m_t, with
    upper = rollout_rs_threshold, lower = rollout_rs_threshold_lower (None: 1 / upper, as verl;
    0: drop only weights above upper) and rho_t = exp(log_rho(level = rollout_rs)).
    token: a token outside the band is dropped; sequence / geometric: the row's product /
    geometric mean decides for all its tokens.

    metrics: rollout_rs_masked_fraction (share of valid tokens dropped),
    rollout_rs_seq_masked_fraction (share of rows with valid tokens that lost at least one)."""
    if rollout_rs not in ROLLOUT_RS_LEVELS:
        raise ValueError(f"rollout_rs={rollout_rs!r}: allowed {list(ROLLOUT_RS_LEVELS)} (or null: off)")
    upper = rollout_rs_threshold
    lower = 1.0 / upper if rollout_rs_threshold_lower is None else rollout_rs_threshold_lower
    if not (upper > 0 and 0 <= lower <= upper):
        raise ValueError(f"rollout_rs_threshold={upper!r}, rollout_rs_threshold_lower={lower!r}: "
                         "need 0 <= lower <= upper and upper > 0")
    valid = as_bool_mask(mask)
    rho = torch.exp(log_rho(old_logprobs, sampler_logprobs, mask, rollout_rs))
    keep = valid & (rho >= lower) & (rho <= upper)
    dropped = valid & ~keep
    rows = valid.any(-1)
    metrics = {
        "rollout_rs_masked_fraction": masked_mean(dropped.to(rho.dtype), valid),
        "rollout_rs_seq_masked_fraction": masked_mean(dropped.any(-1).to(rho.dtype), rows),
    }
    return keep, metrics

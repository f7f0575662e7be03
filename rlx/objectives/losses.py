"""Policy-gradient losses: small pure functions, one per objective, in a name -> fn registry.

Every loss has the signature
    fn(logprobs[B,T], old_logprobs[B,T], advantages[B,T] or [B], mask[B,T], *, <its cfg keys>)
        -> (loss: 0-d tensor, metrics: dict[str, 0-d detached tensor])
with verl's key names. Conventions shared by all:
  * r = exp(lp - lp_old), computed in fp32 (Theorem 3); lp - lp_old is clamped to [-20, 20].
  * old_logprobs and advantages are detached; masked positions are replaced by 0 before any
    arithmetic, so padding may hold -inf / NaN without poisoning the loss or the gradient.
  * the loss is aggregated by `aggregate_loss` (loss_agg_mode, global_tokens, global_seqs,
    max_response_length: pass whole-batch counts for micro-batch invariance).
  * metrics are over this call's valid tokens: clipfrac_low (A<0 and r < low bound: the clip
    binds, gradient 0), clipfrac_high (A>0 and r > high bound), clipfrac (either), ratio_mean,
    approx_kl = mean(lp_old - lp), plus loss-specific ones.
"""

from __future__ import annotations

from typing import Callable

import torch

from ._checks import as_bool_mask, check_same_shape, masked_mean
from ._registry import check_kwargs
from .aggregation import aggregate_loss

LOG_RATIO_CLAMP = 20.0


def _prepare(logprobs, old_logprobs, advantages, mask):
    """fp32, masked-to-zero (lp, lp_old, A, valid); A [B] is broadcast over T."""
    if advantages.dim() == 1 and logprobs.dim() == 2:
        advantages = advantages[:, None].expand_as(logprobs)
    check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [B, T], got shape {tuple(logprobs.shape)}")
    valid = as_bool_mask(mask)
    zero = logprobs.new_zeros((), dtype=torch.float32)
    lp = torch.where(valid, logprobs.float(), zero)
    old = torch.where(valid, old_logprobs.detach().float(), zero)
    adv = torch.where(valid, advantages.detach().float(), zero)
    return lp, old, adv, valid


def _log_ratio(lp, old):
    return (lp - old).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def _metrics(ratio, lp, old, valid, low_clipped, high_clipped, **extra):
    """The metrics every loss reports (fractions over this call's valid tokens)."""
    low = (low_clipped & valid).float()
    high = (high_clipped & valid).float()
    m = {
        "clipfrac_low": masked_mean(low, valid),
        "clipfrac_high": masked_mean(high, valid),
        "clipfrac": masked_mean(torch.maximum(low, high), valid),
        "ratio_mean": masked_mean(ratio.detach(), valid),
        "approx_kl": masked_mean((old - lp).detach(), valid),
    }
    m.update(extra)
    return {k: v.detach() for k, v in m.items()}


def _agg(loss_mat, valid, loss_agg_mode, global_tokens, global_seqs, max_response_length):
    return aggregate_loss(
        loss_mat, valid, loss_agg_mode, global_tokens, global_seqs, max_response_length
    )


def _check_clip(clip_ratio_low, clip_ratio_high, clip_ratio_c=None):
    if not 0.0 <= clip_ratio_low <= 1.0:
        raise ValueError(f"clip_ratio_low={clip_ratio_low!r} is invalid; must be in [0, 1]")
    if not clip_ratio_high >= 0.0:
        raise ValueError(f"clip_ratio_high={clip_ratio_high!r} is invalid; must be >= 0")
    if clip_ratio_c is not None and not clip_ratio_c > 1.0:
        raise ValueError(f"clip_ratio_c={clip_ratio_c!r} is invalid; must be > 1 or None (off)")


def reinforce_loss(
    logprobs, old_logprobs, advantages, mask, *,
    loss_agg_mode="token-mean", global_tokens=None, global_seqs=None, max_response_length=None,
):
    """On-policy REINFORCE (the RLOO loss): l_t = -A_t * lp_t. No ratio, no clip.

    old_logprobs only feed the ratio_mean / approx_kl metrics (pass lp.detach() when there is
    none); clip fractions are 0.
    """
    lp, old, adv, valid = _prepare(logprobs, old_logprobs, advantages, mask)
    ratio = torch.exp(_log_ratio(lp, old)).detach()
    loss = _agg(-adv * lp, valid, loss_agg_mode, global_tokens, global_seqs, max_response_length)
    none = torch.zeros_like(valid)
    return loss, _metrics(ratio, lp, old, valid, none, none)


def ppo_loss(
    logprobs, old_logprobs, advantages, mask, *,
    clip_ratio_low=0.2, clip_ratio_high=0.2, clip_ratio_c=None,
    loss_agg_mode="token-mean", global_tokens=None, global_seqs=None, max_response_length=None,
):
    """PPO clipped surrogate with decoupled bounds and optional dual clip.

    l_t = max(-A r, -A clip(r, 1 - clip_ratio_low, 1 + clip_ratio_high))
    dual clip (clip_ratio_c = c > 1, Ye et al. 2020), for A < 0 only: l_t = min(l_t, -A c).
    GRPO = ppo with 0.2/0.2 and seq-mean-token-mean; DAPO = 0.2/0.28 and token-mean.
    Extra metric: clipfrac_dual (A < 0 and r > c).
    """
    _check_clip(clip_ratio_low, clip_ratio_high, clip_ratio_c)
    lp, old, adv, valid = _prepare(logprobs, old_logprobs, advantages, mask)
    ratio = torch.exp(_log_ratio(lp, old))
    lo, hi = 1.0 - clip_ratio_low, 1.0 + clip_ratio_high
    loss_mat = torch.maximum(-adv * ratio, -adv * ratio.clamp(lo, hi))
    dual = torch.zeros_like(valid)
    if clip_ratio_c is not None:
        loss_mat = torch.where(adv < 0, torch.minimum(loss_mat, -adv * clip_ratio_c), loss_mat)
        dual = (adv < 0) & (ratio > clip_ratio_c)
    loss = _agg(loss_mat, valid, loss_agg_mode, global_tokens, global_seqs, max_response_length)
    r = ratio.detach()
    return loss, _metrics(
        r, lp, old, valid, (adv < 0) & (r < lo), (adv > 0) & (r > hi),
        clipfrac_dual=masked_mean((dual & valid).float(), valid),
    )


POLICY_LOSSES: dict[str, Callable] = {
    "reinforce": reinforce_loss,
    "ppo": ppo_loss,
}


def policy_loss(name, logprobs, old_logprobs, advantages, mask, **cfg):
    """Dispatch to POLICY_LOSSES[name](logprobs, old_logprobs, advantages, mask, **cfg).

    Unknown name -> ValueError listing the names; a cfg key the loss does not take -> TypeError
    listing the keys it does take.
    """
    try:
        fn = POLICY_LOSSES[name]
    except KeyError:
        raise ValueError(f"policy loss {name!r} is unknown; allowed: {sorted(POLICY_LOSSES)}") from None
    check_kwargs(fn, cfg, what=f"policy loss {name!r}", skip=4)
    return fn(logprobs, old_logprobs, advantages, mask, **cfg)

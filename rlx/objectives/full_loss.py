"""The loss a trainer calls: one registered policy loss (rlx.objectives.losses.POLICY_LOSSES)
plus the entropy bonus and the KL-to-reference term, aggregated like it (all together in
docs/method.md, "Policy losses")."""

from __future__ import annotations

import inspect

import torch

from ._checks import as_bool_mask
from ._registry import accepted_kwargs, check_kwargs
from .aggregation import aggregate_loss
from .kl import kl_penalty
from .losses import POLICY_LOSSES


def entropy_bonus(
    entropy, mask, entropy_coeff, *,
    loss_agg_mode="token-mean", global_tokens=None, global_seqs=None, max_response_length=None,
):
    """Entropy bonus term to ADD to a loss: -entropy_coeff * agg(H_t), with the same aggregation
    as the policy loss. H_t is the exact token entropy (entropy_from_logits), differentiable."""
    valid = as_bool_mask(mask)
    h = torch.where(valid, entropy.to(torch.promote_types(entropy.dtype, torch.float32)), 0.0)
    return -entropy_coeff * aggregate_loss(h, valid, loss_agg_mode, global_tokens, global_seqs, max_response_length)


def kl_loss(
    logprobs, ref_logprobs, mask, kl_loss_coef, kl_loss_type="k3", *,
    loss_agg_mode="token-mean", global_tokens=None, global_seqs=None, max_response_length=None,
):
    """KL-to-reference term to ADD to a loss: kl_loss_coef * agg(kl_penalty(lp, lp_ref, type))."""
    valid = as_bool_mask(mask)
    kl = kl_penalty(torch.where(valid, logprobs, 0.0), torch.where(valid, ref_logprobs, 0.0),
                    kl_loss_type)
    return kl_loss_coef * aggregate_loss(kl, valid, loss_agg_mode, global_tokens, global_seqs, max_response_length)


_AGG_KEYS = ("loss_agg_mode", "global_tokens", "global_seqs", "max_response_length")
_COMMON_KEYS = ("entropy", "entropy_coeff", "ref_logprobs", "kl_loss_coef", "kl_loss_type")


def policy_loss_keys(name: str) -> tuple[str, ...]:
    """The cfg keys policy_loss(name, ...) accepts: the loss's own plus the entropy / KL terms.
    A trainer that holds one generic config can filter it with this (e.g. drop clip_ratio_*
    for `reinforce`); unknown name -> ValueError."""
    if name not in POLICY_LOSSES:
        raise ValueError(f"policy loss {name!r} is unknown; allowed: {sorted(POLICY_LOSSES)}")
    return tuple(accepted_kwargs(POLICY_LOSSES[name], skip=4)) + _COMMON_KEYS


def policy_loss(
    name, logprobs, old_logprobs, advantages, mask, *,
    entropy=None, entropy_coeff=0.0, ref_logprobs=None, kl_loss_coef=0.0, kl_loss_type="k3",
    **cfg,
):
    """POLICY_LOSSES[name](logprobs, old_logprobs, advantages, mask, **cfg)
    + entropy_bonus(entropy, ...) if entropy_coeff != 0
    + kl_loss(logprobs, ref_logprobs, ...) if kl_loss_coef != 0,
    the extra terms aggregated like the policy term (same loss_agg_mode and normalisers).

    Unknown name -> ValueError listing the names; a cfg key the loss does not take -> TypeError
    listing the keys it does take. metrics: the loss's own, plus pg_loss, and entropy (agg of H)
    when `entropy` is given, kl_ref when `ref_logprobs` is given.
    Combining micro-batch calls made with whole-batch global_tokens / global_seqs: pg_loss,
    entropy and kl_ref are this call's share of the whole-batch value (SUM them); the fraction
    and mean metrics (clipfrac_*, ratio_mean, approx_kl) are over this call's tokens (weight
    them by its token count).
    """
    try:
        fn = POLICY_LOSSES[name]
    except KeyError:
        raise ValueError(f"policy loss {name!r} is unknown; allowed: {sorted(POLICY_LOSSES)}") from None
    check_kwargs(fn, cfg, what=f"policy loss {name!r}", skip=4)
    loss, metrics = fn(logprobs, old_logprobs, advantages, mask, **cfg)
    metrics["pg_loss"] = loss.detach()
    agg = {k: cfg[k] for k in _AGG_KEYS if k in cfg}
    agg.setdefault("loss_agg_mode", _default(fn, "loss_agg_mode"))
    if entropy_coeff != 0 and entropy is None:
        raise ValueError(f"entropy_coeff={entropy_coeff!r} needs the token entropy: pass entropy=")
    if kl_loss_coef != 0 and ref_logprobs is None:
        raise ValueError(f"kl_loss_coef={kl_loss_coef!r} needs the reference: pass ref_logprobs=")
    if entropy is not None:
        bonus = entropy_bonus(entropy, mask, 1.0, **agg)  # = -agg(H)
        metrics["entropy"] = (-bonus).detach()
        if entropy_coeff != 0:
            loss = loss + entropy_coeff * bonus
    if ref_logprobs is not None:
        kl = kl_loss(logprobs, ref_logprobs, mask, 1.0, kl_loss_type, **agg)
        metrics["kl_ref"] = kl.detach()
        if kl_loss_coef != 0:
            loss = loss + kl_loss_coef * kl
    return loss, metrics


def _default(fn, key):
    return inspect.signature(fn).parameters[key].default

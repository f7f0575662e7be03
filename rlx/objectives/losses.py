"""Policy-gradient losses: small pure functions, one per objective, in a name -> fn registry
(all together in docs/method.md, "Policy losses").

Every loss has the signature
    fn(logprobs[B,T], old_logprobs[B,T], advantages[B,T] or [B], mask[B,T], *, <its cfg keys>)
        -> (loss: 0-d tensor, metrics: dict[str, 0-d detached tensor])
with verl's key names. Conventions shared by all:
  * r = exp(lp - lp_old), computed in fp32 or wider (Theorem 3); lp - lp_old is clamped to [-20, 20].
  * old_logprobs and advantages are detached; masked positions are replaced by 0 before any
    arithmetic, so padding may hold -inf / NaN without poisoning the loss or the gradient.
  * the loss is aggregated by `aggregate_loss` (loss_agg_mode, global_tokens, global_seqs,
    max_response_length: pass whole-batch counts for micro-batch invariance).
  * rollout_is_weights (optional, [B,T], detached): the sampler/trainer mismatch correction
    (rlx.objectives.rollout_correction); each per-token loss term is multiplied by its weight
    before aggregation, l_t -> w_t * l_t (verl's rollout_is_weights). The entropy and KL terms
    of policy_loss (rlx.objectives.full_loss) are not weighted.
  * metrics are over this call's valid tokens: clipfrac_low (A<0 and r < low bound: the clip
    binds, gradient 0), clipfrac_high (A>0 and r > high bound), clipfrac (either), ratio_mean,
    approx_kl = mean(lp_old - lp), plus loss-specific ones.
"""

from __future__ import annotations

from typing import Callable

import torch

from ._checks import as_bool_mask, check_same_shape, masked_mean
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
    dt = torch.promote_types(logprobs.dtype, torch.float32)  # at least fp32 (Theorem 3)
    zero = logprobs.new_zeros((), dtype=dt)
    lp = torch.where(valid, logprobs.to(dt), zero)
    old = torch.where(valid, old_logprobs.detach().to(dt), zero)
    adv = torch.where(valid, advantages.detach().to(dt), zero)
    return lp, old, adv, valid


def _log_ratio(lp, old):
    return (lp - old).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def _metrics(ratio, lp, old, valid, low_clipped, high_clipped, **extra):
    """The metrics every loss reports (fractions over this call's valid tokens)."""
    low = (low_clipped & valid).to(lp.dtype)
    high = (high_clipped & valid).to(lp.dtype)
    m = {
        "clipfrac_low": masked_mean(low, valid),
        "clipfrac_high": masked_mean(high, valid),
        "clipfrac": masked_mean(torch.maximum(low, high), valid),
        "ratio_mean": masked_mean(ratio.detach(), valid),
        "approx_kl": masked_mean((old - lp).detach(), valid),
    }
    m.update(extra)
    return {k: v.detach() for k, v in m.items()}


def _agg(loss_mat, valid, loss_agg_mode, global_tokens, global_seqs, max_response_length, rollout_is_weights=None):
    """aggregate_loss of the per-token loss, each term first multiplied by its rollout-correction
    weight w_t when given (l_t -> w_t * l_t; w detached, 0 at masked positions; the normalisers
    are unchanged). rlx.objectives.rollout_correction computes w."""
    if rollout_is_weights is not None:
        check_same_shape(loss=loss_mat, rollout_is_weights=rollout_is_weights)
        w = torch.where(valid, rollout_is_weights.detach().to(loss_mat.dtype), torch.zeros_like(loss_mat))
        loss_mat = loss_mat * w
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
    rollout_is_weights=None,
):
    """On-policy REINFORCE (the RLOO loss): l_t = -A_t * lp_t. No ratio, no clip.

    old_logprobs only feed the ratio_mean / approx_kl metrics (pass lp.detach() when there is
    none); clip fractions are 0.
    """
    lp, old, adv, valid = _prepare(logprobs, old_logprobs, advantages, mask)
    ratio = torch.exp(_log_ratio(lp, old)).detach()
    loss = _agg(-adv * lp, valid, loss_agg_mode, global_tokens, global_seqs, max_response_length,
                rollout_is_weights)
    none = torch.zeros_like(valid)
    return loss, _metrics(ratio, lp, old, valid, none, none)


def ppo_loss(
    logprobs, old_logprobs, advantages, mask, *,
    clip_ratio_low=0.2, clip_ratio_high=0.2, clip_ratio_c=None,
    loss_agg_mode="token-mean", global_tokens=None, global_seqs=None, max_response_length=None,
    rollout_is_weights=None,
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
    loss = _agg(loss_mat, valid, loss_agg_mode, global_tokens, global_seqs, max_response_length,
                rollout_is_weights)
    r = ratio.detach()
    return loss, _metrics(
        r, lp, old, valid, (adv < 0) & (r < lo), (adv > 0) & (r > hi),
        clipfrac_dual=masked_mean((dual & valid).to(lp.dtype), valid),
    )


def loop_loss(
    logprobs, old_logprobs, advantages, mask, *,
    clip_ratio=0.1,
    loss_agg_mode="token-mean", global_tokens=None, global_seqs=None, max_response_length=None,
    rollout_is_weights=None,
):
    """LOOP (Chen et al. 2025): per-token PPO clip with the log-symmetric interval
    r in [1/(1+e), 1+e], e = clip_ratio, i.e. |log r| <= log(1+e):
        l_t = max(-A r, -A clip(r, 1/(1+e), 1+e)).
    = ppo_loss with clip_ratio_low = e/(1+e), clip_ratio_high = e. No KL, no dual clip.
    """
    if not clip_ratio >= 0:
        raise ValueError(f"clip_ratio={clip_ratio!r} is invalid; must be >= 0")
    return ppo_loss(
        logprobs, old_logprobs, advantages, mask,
        clip_ratio_low=1.0 - 1.0 / (1.0 + clip_ratio), clip_ratio_high=clip_ratio,
        loss_agg_mode=loss_agg_mode, global_tokens=global_tokens, global_seqs=global_seqs,
        max_response_length=max_response_length, rollout_is_weights=rollout_is_weights,
    )


def gspo_loss(
    logprobs, old_logprobs, advantages, mask, *,
    clip_ratio_low=3e-4, clip_ratio_high=4e-4,
    loss_agg_mode="seq-mean-token-mean", global_tokens=None, global_seqs=None,
    max_response_length=None,
    rollout_is_weights=None,
):
    """GSPO (Zheng et al. 2025), in its GSPO-token form (works with token-level A, e.g. REPO):
        s_i    = exp(mean_{t in y_i}(lp - lp_old))                      (sequence ratio)
        s_it   = sg(s_i) * exp(lp_t - sg(lp_t))       (value s_i; d s_it / d lp_t = s_i)
        l_t    = max(-A_t s_it, -A_t clip(s_it, 1 - clip_ratio_low, 1 + clip_ratio_high))
    aggregated seq-mean-token-mean by default, which equals sequence-level GSPO when A is
    constant over the sequence. log s_i is clamped to [-20, 20]. ratio_mean is the mean of s_i
    over tokens; token_ratio_mean the per-token r.
    """
    _check_clip(clip_ratio_low, clip_ratio_high)
    lp, old, adv, valid = _prepare(logprobs, old_logprobs, advantages, mask)
    n = valid.sum(dim=-1, keepdim=True).float()
    seq_log_ratio = (lp - old).sum(dim=-1, keepdim=True) / torch.where(n > 0, n, torch.ones_like(n))
    seq_log_ratio = seq_log_ratio.detach().clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    s = torch.exp(seq_log_ratio + lp - lp.detach())
    lo, hi = 1.0 - clip_ratio_low, 1.0 + clip_ratio_high
    loss_mat = torch.maximum(-adv * s, -adv * s.clamp(lo, hi))
    loss = _agg(loss_mat, valid, loss_agg_mode, global_tokens, global_seqs, max_response_length,
                rollout_is_weights)
    sv = s.detach()
    token_ratio = torch.exp(_log_ratio(lp, old)).detach()
    return loss, _metrics(
        sv, lp, old, valid, (adv < 0) & (sv < lo), (adv > 0) & (sv > hi),
        token_ratio_mean=masked_mean(token_ratio, valid),
    )


def cispo_loss(
    logprobs, old_logprobs, advantages, mask, *,
    clip_ratio_low=1.0, clip_ratio_high=0.28,
    loss_agg_mode="token-mean", global_tokens=None, global_seqs=None, max_response_length=None,
    rollout_is_weights=None,
):
    """CISPO (MiniMax-M1, 2025): clip the importance weight, never drop a token's gradient:
        l_t = -sg(clip(r, 1 - clip_ratio_low, 1 + clip_ratio_high)) * A_t * lp_t.
    Default clip_ratio_low = 1.0 (no lower bound, as in MiniMax-M1), clip_ratio_high = 0.28 (our
    choice). Here clipfrac_low / clipfrac_high count tokens whose WEIGHT was truncated
    (r < 1 - low / r > 1 + high, any sign of A); their gradient is scaled, not zeroed.
    """
    _check_clip(clip_ratio_low, clip_ratio_high)
    lp, old, adv, valid = _prepare(logprobs, old_logprobs, advantages, mask)
    ratio = torch.exp(_log_ratio(lp, old)).detach()
    lo, hi = 1.0 - clip_ratio_low, 1.0 + clip_ratio_high
    loss_mat = -ratio.clamp(lo, hi) * adv * lp
    loss = _agg(loss_mat, valid, loss_agg_mode, global_tokens, global_seqs, max_response_length,
                rollout_is_weights)
    return loss, _metrics(ratio, lp, old, valid, ratio < lo, ratio > hi)


def _token_covariance(adv, lp, valid):
    """Cui et al. (2025) per-token cov_t = (A_t - mean A)(lp_t - mean lp), means over valid tokens."""
    a_c = adv - masked_mean(adv, valid)
    lp_c = lp.detach() - masked_mean(lp.detach(), valid)
    return a_c * lp_c


def _randperm(n, generator, device):
    if generator is None:
        return torch.randperm(n, device=device)
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def clip_cov_loss(
    logprobs, old_logprobs, advantages, mask, *,
    clip_ratio_low=0.2, clip_ratio_high=0.2,
    clip_cov_ratio=2e-4, clip_cov_lb=1.0, clip_cov_ub=5.0, generator=None,
    loss_agg_mode="token-mean", global_tokens=None, global_seqs=None, max_response_length=None,
    rollout_is_weights=None,
):
    """Clip-Cov (Cui et al. 2025): the PPO surrogate, with the gradient of a few
    high-covariance tokens removed. cov_t = (A_t - mean A)(lp_t - mean lp) over valid tokens;
    eligible: valid, clip_cov_lb < cov_t < clip_cov_ub and not already clipped by the ratio;
    max(1, int(clip_cov_ratio * n_valid)) of them (none if clip_cov_ratio = 0), chosen uniformly at random (`generator`),
    have their loss term detached (value kept, gradient 0). Extra metric: clipfrac_cov.
    The selection uses this call's tokens only, so Clip-Cov is not micro-batch invariant.
    """
    _check_clip(clip_ratio_low, clip_ratio_high)
    if not 0.0 <= clip_cov_ratio <= 1.0:
        raise ValueError(f"clip_cov_ratio={clip_cov_ratio!r} is invalid; must be in [0, 1]")
    if not clip_cov_lb < clip_cov_ub:
        raise ValueError(f"clip_cov_ub={clip_cov_ub!r} is invalid; must be > clip_cov_lb={clip_cov_lb!r}")
    lp, old, adv, valid = _prepare(logprobs, old_logprobs, advantages, mask)
    ratio = torch.exp(_log_ratio(lp, old))
    lo, hi = 1.0 - clip_ratio_low, 1.0 + clip_ratio_high
    unclipped, clipped = -adv * ratio, -adv * ratio.clamp(lo, hi)
    loss_mat = torch.maximum(unclipped, clipped)
    r = ratio.detach()
    low_c, high_c = (adv < 0) & (r < lo), (adv > 0) & (r > hi)
    cov = _token_covariance(adv, lp, valid)
    eligible = valid & (cov > clip_cov_lb) & (cov < clip_cov_ub) & ~(clipped > unclipped).detach()
    idx = torch.nonzero(eligible.reshape(-1)).squeeze(-1)
    n_valid = int(valid.sum())
    k = min(max(int(clip_cov_ratio * n_valid), 1), idx.numel()) if n_valid and clip_cov_ratio else 0
    chosen = idx[_randperm(idx.numel(), generator, idx.device)[:k]]
    selected = torch.zeros(valid.numel(), dtype=torch.bool, device=valid.device)
    selected[chosen] = True
    selected = selected.reshape(valid.shape)
    loss_mat = torch.where(selected, loss_mat.detach(), loss_mat)
    loss = _agg(loss_mat, valid, loss_agg_mode, global_tokens, global_seqs, max_response_length,
                rollout_is_weights)
    return loss, _metrics(r, lp, old, valid, low_c, high_c,
                          clipfrac_cov=masked_mean(selected.to(lp.dtype), valid))


def kl_cov_loss(
    logprobs, old_logprobs, advantages, mask, *,
    kl_cov_ratio=2e-4, ppo_kl_coef=1.0, generator=None,
    loss_agg_mode="token-mean", global_tokens=None, global_seqs=None, max_response_length=None,
    rollout_is_weights=None,
):
    """KL-Cov (Cui et al. 2025): no ratio clip; the max(1, int(kl_cov_ratio * n_valid)) valid
    tokens (none if kl_cov_ratio = 0) with the largest cov_t = (A_t - mean A)(lp_t - mean lp) get a KL penalty:
        l_t = -A_t r_t + ppo_kl_coef * |lp_t - lp_old_t| * [t selected].
    Ties at the selection boundary are broken at random when a `generator` is given
    (deterministic top-k otherwise). Per-call selection: not micro-batch invariant.
    Extra metric: klfrac_cov (fraction of valid tokens penalised). clipfrac_* are 0.
    """
    if not 0.0 <= kl_cov_ratio <= 1.0:
        raise ValueError(f"kl_cov_ratio={kl_cov_ratio!r} is invalid; must be in [0, 1]")
    if not ppo_kl_coef >= 0:
        raise ValueError(f"ppo_kl_coef={ppo_kl_coef!r} is invalid; must be >= 0")
    lp, old, adv, valid = _prepare(logprobs, old_logprobs, advantages, mask)
    log_ratio = _log_ratio(lp, old)
    ratio = torch.exp(log_ratio)
    cov = _token_covariance(adv, lp, valid).reshape(-1)
    idx = torch.nonzero(valid.reshape(-1)).squeeze(-1)
    k = max(int(kl_cov_ratio * idx.numel()), 1) if idx.numel() > 0 and kl_cov_ratio > 0 else 0
    if generator is not None:
        idx = idx[_randperm(idx.numel(), generator, idx.device)]
    chosen = idx[torch.topk(cov[idx], k).indices] if k > 0 else idx[:0]
    selected = torch.zeros(valid.numel(), dtype=torch.bool, device=valid.device)
    selected[chosen] = True
    selected = selected.reshape(valid.shape)
    loss_mat = -adv * ratio + torch.where(selected, ppo_kl_coef * (lp - old).abs(), torch.zeros_like(lp))
    loss = _agg(loss_mat, valid, loss_agg_mode, global_tokens, global_seqs, max_response_length,
                rollout_is_weights)
    none = torch.zeros_like(valid)
    return loss, _metrics(ratio.detach(), lp, old, valid, none, none,
                          klfrac_cov=masked_mean(selected.to(lp.dtype), valid))


POLICY_LOSSES: dict[str, Callable] = {
    "reinforce": reinforce_loss,
    "ppo": ppo_loss,
    "loop": loop_loss,
    "gspo": gspo_loss,
    "cispo": cispo_loss,
    "clip_cov": clip_cov_loss,
    "kl_cov": kl_cov_loss,
}

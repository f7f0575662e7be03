"""KL(pi || pi_ref) per-token estimators (Schulman's k1, k2, k3) from sampled-token log-probs."""

from __future__ import annotations

import torch

from ._checks import check_same_shape

KL_KINDS = ("k1", "k2", "k3")
# verl's kl_loss_type spellings for the same estimators
KL_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}
# every name kl_penalty(kind=...) accepts (algorithm.kl_loss_type)
KL_TYPES = KL_KINDS + tuple(KL_ALIASES)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token KL estimate, d = lp - lp_ref:
      k1 = d                     (unbiased, high variance, can be negative)
      k2 = 0.5 * d^2             (biased, low variance)
      k3 = exp(-d) + d - 1       (unbiased, >= 0; verl's "low_var_kl")
    Computed in fp32 (or wider). d is clamped to [-20, 20] inside k3 only, so exp never overflows.
    `kind` also accepts verl's names "kl", "mse", "low_var_kl". ref_logprobs is detached.
    """
    kind = KL_ALIASES.get(kind, kind)
    if kind not in KL_KINDS:
        raise ValueError(
            f"kl kind={kind!r} is invalid; allowed: {list(KL_KINDS) + list(KL_ALIASES)}"
        )
    check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    dt = torch.promote_types(logprobs.dtype, torch.float32)
    d = logprobs.to(dt) - ref_logprobs.detach().to(dt)
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d.square()
    d = d.clamp(-20.0, 20.0)
    return torch.exp(-d) + d - 1.0

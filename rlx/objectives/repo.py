"""REPO advantage transforms and the Theorem 1 entropy-change prediction
(docs/method.md, sections "Theorem 1", "REPO-R", "REPO-D").

Theorem 1 (first order, tabular softmax policy): one policy-gradient step of size eta changes
the entropy at state s by  dH(s) ~= -eta * E_{a~pi}[(A(s,a) - E_pi[A|s]) * L(s,a) * pi(a|s)],
with the centred log-prob L = log pi(a|s) + H(pi(.|s)). Replacing A by A - beta*L adds the
term +eta*beta*E[pi L^2] >= 0. All functions here are computed without gradient.
"""

from __future__ import annotations

import torch

from ._checks import as_bool_mask, check_same_shape, masked_mean

REPO_R_VARIANTS = ("signed", "positive_only")


def _w(x: torch.Tensor) -> torch.Tensor:
    """x in fp32, or fp64 if it is fp64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@torch.no_grad()
def repo_r(
    advantages: torch.Tensor,
    logprobs: torch.Tensor,
    zeta: float,
    variant: str = "signed",
    logprob_floor: float = -20.0,
) -> torch.Tensor:
    """REPO-R advantage transform (sign-preserving), lp = max(stopgrad(logprobs), logprob_floor):

    signed:        A > 0: max(0, A * (1 - zeta * lp));  A < 0: min(0, A * (1 + zeta * lp));  A = 0: 0
    positive_only: A > 0: max(0, A * (1 - zeta * lp));  otherwise A unchanged
    i.e. A - beta * lp with beta = zeta * |A| (signed) or zeta * max(A, 0) (positive_only),
    clamped so the sign of A never flips. zeta > 0 raises entropy (rare correct tokens boosted,
    rare wrong tokens penalised less); zeta < 0 lowers it (rare correct tokens boosted less,
    rare wrong tokens penalised more). positive_only leaves A <= 0 untouched for either sign of
    zeta; zeta means the same in both variants (docs/method.md, "REPO-R"; why this sign
    differs from the paper notes: "Where the code departs from the paper notes").
    -inf log-probs are floored.
    """
    if variant not in REPO_R_VARIANTS:
        raise ValueError(f"variant={variant!r} is invalid; allowed: {list(REPO_R_VARIANTS)}")
    if advantages.dim() == 1 and logprobs.dim() == 2:
        advantages = advantages[:, None].expand_as(logprobs)
    check_same_shape(advantages=advantages, logprobs=logprobs)
    a = _w(advantages.detach())
    lp = _w(logprobs.detach()).clamp(min=logprob_floor)  # clamp maps -inf to the floor
    pos = torch.clamp(a * (1.0 - zeta * lp), min=0.0)
    if variant == "signed":
        neg = torch.clamp(a * (1.0 + zeta * lp), max=0.0)
    else:
        neg = a
    zero = torch.zeros_like(a)
    return torch.where(a > 0, pos, torch.where(a < 0, neg, zero))


@torch.no_grad()
def predicted_entropy_change(
    advantages: torch.Tensor, logprobs: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Theorem 1, sampled-token estimate per unit step (fp32, 0-d):
        dH_pred = -mean_t( A_t * (lp_t + H_t) * exp(lp_t) )   over the valid tokens t,
    where H_t is the exact entropy of the next-token distribution at t. Multiply by the step
    size for a prediction of a step. `mask` may be bool or float weights (a weighted mean);
    with one row per action and weights pi(a) it is the exact expectation E_{a~pi}.

    A is used as given, not centred: the prediction is exact only when E_pi[A|s] = 0. Otherwise
    it is off by -E_pi[A|s] * E_pi[pi L] per state (E_pi[pi L] = Cov_pi(pi, log pi) >= 0), although
    a baseline does not change the expected step (docs/method.md, "Theorem 1").
    """
    if advantages.dim() == 1 and logprobs.dim() == 2:
        advantages = advantages[:, None].expand_as(logprobs)
    check_same_shape(advantages=advantages, logprobs=logprobs, entropy=entropy, mask=mask)
    valid = as_bool_mask(mask)
    a = torch.where(valid, _w(advantages), 0.0)
    lp = torch.where(valid, _w(logprobs), 0.0)
    h = torch.where(valid, _w(entropy), 0.0)
    return -masked_mean(a * (lp + h) * lp.exp(), mask)


@torch.no_grad()
def decorrelating_beta(
    advantages: torch.Tensor, logprobs: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The coefficient that cancels the first-order entropy change of A - beta * L:
        beta* = mean_t(pi_t A_t L_t) / mean_t(pi_t L_t^2),   L_t = lp_t + H_t, pi_t = exp(lp_t).
    (0 when every L_t is 0.) Exact per state when the means are expectations over pi(.|s).
    """
    if advantages.dim() == 1 and logprobs.dim() == 2:
        advantages = advantages[:, None].expand_as(logprobs)
    check_same_shape(advantages=advantages, logprobs=logprobs, entropy=entropy, mask=mask)
    valid = as_bool_mask(mask)
    lp = torch.where(valid, _w(logprobs), 0.0)
    big_l = torch.where(valid, lp + _w(entropy), 0.0)
    a = torch.where(valid, _w(advantages), 0.0)
    pi = lp.exp()
    num = masked_mean(pi * a * big_l, mask)
    den = masked_mean(pi * big_l.square(), mask)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), 0.0)


@torch.no_grad()
def repo_d(
    advantages: torch.Tensor,
    logprobs: torch.Tensor,
    entropy: torch.Tensor,
    mask: torch.Tensor,
    zeta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REPO-D (our choice of the published sketch; docs/method.md, "REPO-D"):
        L_t = lp_t + H_t,  dH_pred = predicted_entropy_change(A, lp, H, mask),
        beta = zeta * max(0, -dH_pred),  A_d = A - beta * L_t  (masked positions: A unchanged).
    Returns (A_d [B,T] fp32 (fp64 for fp64 inputs), beta 0-d). `mask` may be float weights
    (as in predicted_entropy_change). beta is a batch statistic: apply repo_d to the whole
    minibatch before splitting it into micro-batches, or the result depends on the split.
    """
    if advantages.dim() == 1 and logprobs.dim() == 2:
        advantages = advantages[:, None].expand_as(logprobs)
    check_same_shape(advantages=advantages, logprobs=logprobs, entropy=entropy, mask=mask)
    valid = as_bool_mask(mask)
    d_pred = predicted_entropy_change(advantages, logprobs, entropy, mask)
    beta = zeta * torch.clamp(-d_pred, min=0.0)
    big_l = torch.where(valid, _w(logprobs) + _w(entropy), 0.0)
    return _w(advantages) - beta * big_l, beta

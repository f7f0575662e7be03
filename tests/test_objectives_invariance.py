"""Micro-batch invariance: splitting a batch into 1, 2 or 4 micro-batches (each padded only to
its own longest row) and summing their losses gives the full-batch loss and gradient, provided
every micro-batch is normalised by the WHOLE batch's counts (global_tokens / global_seqs)."""

import pytest
import torch
from torch.testing import assert_close

from rlx.objectives import (
    LOSS_AGG_MODES,
    POLICY_LOSSES,
    count_seqs,
    count_tokens,
    entropy_from_logits,
    policy_loss,
    repo_d,
    repo_r,
)

B, T, V = 8, 9, 7
# Clip-Cov / KL-Cov choose tokens from a per-call covariance: invariant only with selection off.
EXTRA = {"clip_cov": dict(clip_cov_ratio=0.0), "kl_cov": dict(kl_cov_ratio=0.0), "gspo": dict(clip_ratio_low=0.05, clip_ratio_high=0.05)}


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[3] = 0  # a fully masked row
    mask = torch.arange(T)[None, :] < lengths[:, None]
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    labels = torch.randint(0, V, (B, T), generator=g)
    old = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    lp = old + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    ent = torch.rand(B, T, generator=g, dtype=torch.float64)
    ref = old + 0.1 * torch.randn(B, T, generator=g, dtype=torch.float64)
    return lp.requires_grad_(), old, adv, mask, ent.requires_grad_(), ref


def _split_loss(name, lp, old, adv, mask, ent, ref, n_splits, mode, use_global=True, **kw):
    glob = dict(global_tokens=count_tokens(mask), global_seqs=count_seqs(mask), max_response_length=T) if use_global else {}
    total = 0.0
    for rows in torch.arange(B).chunk(n_splits):
        m = mask[rows]
        t = max(int(m.sum(-1).max()), 1)  # dynamic padding: trim to this micro-batch's longest row
        sl = (rows, slice(0, t))
        loss, _ = policy_loss(name, lp[rows][:, :t], old[rows][:, :t], adv[rows][:, :t], m[:, :t],
                              loss_agg_mode=mode, entropy=ent[rows][:, :t], entropy_coeff=0.01,
                              ref_logprobs=ref[rows][:, :t], kl_loss_coef=0.05, **glob, **kw)
        total = total + loss
    return total


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_micro_batch_invariance(name, mode):
    lp, old, adv, mask, ent, ref = _batch()
    kw = EXTRA.get(name, {})
    results = []
    for n in (1, 2, 4):
        loss = _split_loss(name, lp, old, adv, mask, ent, ref, n, mode, **kw)
        glp, gent = torch.autograd.grad(loss, (lp, ent))
        results.append((loss.detach(), glp, gent))
    for loss, glp, gent in results[1:]:
        assert_close(loss, results[0][0])
        assert_close(glp, results[0][1])
        assert_close(gent, results[0][2])
    assert results[0][1].abs().sum() > 0


def test_local_normalisers_are_not_invariant():
    """Without global counts, token-mean over uneven micro-batches differs: the knob matters."""
    lp, old, adv, mask, ent, ref = _batch()
    full = _split_loss("ppo", lp, old, adv, mask, ent, ref, 1, "token-mean", use_global=False)
    four = _split_loss("ppo", lp, old, adv, mask, ent, ref, 4, "token-mean", use_global=False)
    assert not torch.allclose(full, four / 4)


def test_repo_transforms_commute_with_splitting():
    """REPO-R is per token; REPO-D's beta is a batch statistic, applied once per minibatch."""
    lp, old, adv, mask, ent, _ = _batch(1)
    full = repo_r(adv, lp, 0.3)
    parts = torch.cat([repo_r(adv[r], lp[r], 0.3) for r in torch.arange(B).chunk(4)])
    assert torch.equal(full, parts)
    a_d, beta = repo_d(adv, lp, ent, mask, 0.5)
    for rows in torch.arange(B).chunk(4):
        assert_close(a_d[rows], adv[rows] - beta * torch.where(mask[rows], lp[rows] + ent[rows], 0.0).detach())


def test_entropy_chunking_is_invariant():
    logits = torch.randn(3, 5, 13, dtype=torch.float64, requires_grad=True)
    outs = [entropy_from_logits(logits, c) for c in (1, 4, 15, 4096)]
    grads = [torch.autograd.grad(o.sum(), logits)[0] for o in outs]
    for o, g in zip(outs[1:], grads[1:]):
        assert_close(o, outs[0])
        assert_close(g, grads[0])

"""loop, gspo, cispo, clip_cov, kl_cov and the entropy / KL terms, against loop re-statements."""

import math

import pytest
import torch
from torch.testing import assert_close

from rlx.objectives import POLICY_LOSSES, aggregate_loss, kl_penalty, policy_loss, policy_loss_keys


def _inputs(b=6, t=7, seed=0, spread=0.5, adv_scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    logits = torch.randn(b, t, 5, generator=g, dtype=dtype)
    labels = torch.randint(0, 5, (b, t), generator=g)
    lp = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    old = lp + spread * torch.randn(b, t, generator=g, dtype=dtype)
    adv = adv_scale * torch.randn(b, generator=g, dtype=dtype)
    return lp.detach().clone().requires_grad_(), old, adv[:, None].expand(b, t).contiguous(), mask


def _loop_matrix(lp, mask, fn):
    """Stack fn(i, j) (a differentiable 0-d tensor) over valid tokens, 0 elsewhere."""
    b, t = lp.shape
    zero = torch.zeros((), dtype=lp.dtype)
    return torch.stack([torch.stack([fn(i, j) if mask[i, j] else zero for j in range(t)]) for i in range(b)])


def _check(loss, ref, lp):
    g = torch.autograd.grad(loss, lp, retain_graph=True)[0]
    gref = torch.autograd.grad(ref, lp, retain_graph=True)[0]
    assert_close(loss, ref)
    assert_close(g, gref)


# ----------------------------------------------------------------------------- LOOP
@pytest.mark.parametrize("e", [0.1, 0.3])
def test_loop_log_symmetric_clip(e):
    lp, old, adv, mask = _inputs(spread=0.5)
    loss, m = policy_loss("loop", lp, old, adv, mask, clip_ratio=e)

    def tok(i, j):
        r = torch.exp(lp[i, j] - old[i, j])
        a = adv[i, j]
        return torch.maximum(-a * r, -a * r.clamp(1 / (1 + e), 1 + e))

    _check(loss, aggregate_loss(_loop_matrix(lp, mask, tok), mask, "token-mean"), lp)
    r = torch.exp(lp.detach() - old)
    n = mask.sum()
    assert_close(m["clipfrac_low"], (((adv < 0) & (r < 1 / (1 + e)) & mask).sum() / n), check_dtype=False)
    assert_close(m["clipfrac_high"], (((adv > 0) & (r > 1 + e) & mask).sum() / n), check_dtype=False)
    # the interval is symmetric in log space
    assert math.log(1 + e) == pytest.approx(-math.log(1 / (1 + e)))


# ----------------------------------------------------------------------------- GSPO
def test_gspo_equals_sequence_level_formula_for_sequence_advantages():
    """GSPO-token with A constant per sequence == sequence-level GSPO, value and gradient."""
    lp, old, adv, mask = _inputs(spread=0.002)  # tiny ratios so the 3e-4/4e-4 clip is exercised
    low, high = 3e-4, 4e-4
    loss, m = policy_loss("gspo", lp, old, adv, mask)
    terms = []
    for i in range(lp.shape[0]):
        idx = mask[i].nonzero().squeeze(-1)
        s = torch.exp((lp[i, idx] - old[i, idx]).mean())
        a = adv[i, 0]
        terms.append(torch.maximum(-a * s, -a * s.clamp(1 - low, 1 + high)))
    ref = torch.stack(terms).mean()
    _check(loss, ref, lp)
    seq_s = torch.stack([torch.exp((lp[i] - old[i])[mask[i]].mean()) for i in range(6)]).detach()
    clipped = ((adv[:, 0] < 0) & (seq_s < 1 - low)) | ((adv[:, 0] > 0) & (seq_s > 1 + high))
    assert clipped.any() and not clipped.all()
    tok_frac = (clipped[:, None] & mask).sum() / mask.sum()
    assert_close(m["clipfrac"], tok_frac, check_dtype=False)
    assert_close(m["ratio_mean"], (seq_s[:, None].expand_as(mask)[mask]).mean(), check_dtype=False)


def test_gspo_token_level_advantages():
    """With token-level A: l_t = max(-A_t s_i, -A_t clip(s_i)), d/d lp_t through s_i * lp_t only."""
    lp, old, _, mask = _inputs(spread=0.002)
    adv = torch.randn(lp.shape, generator=torch.Generator().manual_seed(5), dtype=lp.dtype)
    loss, _ = policy_loss("gspo", lp, old, adv, mask, clip_ratio_low=0.1, clip_ratio_high=0.1)
    b = lp.shape[0]
    log_s = [((lp[i] - old[i])[mask[i]].mean()).detach() for i in range(b)]

    def tok(i, j):
        s = torch.exp(log_s[i] + lp[i, j] - lp[i, j].detach())
        return torch.maximum(-adv[i, j] * s, -adv[i, j] * s.clamp(0.9, 1.1))

    _check(loss, aggregate_loss(_loop_matrix(lp, mask, tok), mask, "seq-mean-token-mean"), lp)


# ----------------------------------------------------------------------------- CISPO
@pytest.mark.parametrize("low, high", [(1.0, 0.28), (0.2, 0.2)])
def test_cispo_matches_loop(low, high):
    lp, old, adv, mask = _inputs(spread=0.6)
    loss, m = policy_loss("cispo", lp, old, adv, mask, clip_ratio_low=low, clip_ratio_high=high)

    def tok(i, j):
        w = torch.exp(lp[i, j] - old[i, j]).detach().clamp(1 - low, 1 + high)
        return -w * adv[i, j] * lp[i, j]

    _check(loss, aggregate_loss(_loop_matrix(lp, mask, tok), mask, "token-mean"), lp)
    r = torch.exp(lp.detach() - old)
    n = mask.sum()
    assert_close(m["clipfrac_high"], (((r > 1 + high) & mask).sum() / n), check_dtype=False)
    assert_close(m["clipfrac_low"], (((r < 1 - low) & mask).sum() / n), check_dtype=False)
    # no token is dropped: every valid token with A != 0 has a gradient
    (g,) = torch.autograd.grad(loss, lp)
    assert (g[mask & (adv != 0)] != 0).all()


# ----------------------------------------------------------------------------- Clip-Cov / KL-Cov
def _cov(adv, lp, mask):
    a, l = adv[mask], lp.detach()[mask]
    cov = torch.zeros_like(lp.detach())
    cov[mask] = (a - a.mean()) * (l - l.mean())
    return cov


def test_clip_cov_selection_value_and_gradient():
    lp, old, adv, mask = _inputs(b=16, t=12, spread=0.05, adv_scale=3.0)
    ratio_frac = 0.05
    gen = torch.Generator().manual_seed(0)
    loss, m = policy_loss("clip_cov", lp, old, adv, mask, clip_cov_ratio=ratio_frac,
                          clip_cov_lb=0.5, clip_cov_ub=5.0, generator=gen)
    ppo, _ = policy_loss("ppo", lp, old, adv, mask)
    assert_close(loss, ppo)  # values are kept, only gradients are removed
    g = torch.autograd.grad(loss, lp)[0]
    gp = torch.autograd.grad(ppo, lp)[0]
    removed = (g != gp)
    cov = _cov(adv, lp, mask)
    r = torch.exp(lp.detach() - old)
    clipped = ((adv < 0) & (r < 0.8)) | ((adv > 0) & (r > 1.2))
    eligible = mask & (cov > 0.5) & (cov < 5.0) & ~clipped
    n_sel = min(max(int(ratio_frac * mask.sum()), 1), int(eligible.sum()))
    assert n_sel >= 2
    assert int(removed.sum()) == n_sel
    assert (eligible[removed]).all()
    assert torch.equal(g[removed], torch.zeros_like(g[removed]))
    assert m["clipfrac_cov"].item() == pytest.approx(n_sel / int(mask.sum()))
    # the generator drives the random choice: same seed, same selection
    g2 = torch.autograd.grad(policy_loss("clip_cov", lp, old, adv, mask, clip_cov_ratio=ratio_frac,
                                         clip_cov_lb=0.5, generator=torch.Generator().manual_seed(0))[0], lp)[0]
    assert torch.equal(g, g2)
    picks = set()
    for seed in range(6):
        gs = torch.autograd.grad(policy_loss("clip_cov", lp, old, adv, mask, clip_cov_ratio=ratio_frac,
                                             clip_cov_lb=0.5, generator=torch.Generator().manual_seed(seed))[0], lp)[0]
        picks.add(tuple((gs != gp).nonzero().flatten().tolist()))
    assert len(picks) > 1


def test_clip_cov_off_is_ppo_and_validation():
    lp, old, adv, mask = _inputs()
    a, _ = policy_loss("clip_cov", lp, old, adv, mask, clip_cov_ratio=0.0)
    b, _ = policy_loss("ppo", lp, old, adv, mask)
    _check(a, b, lp)
    with pytest.raises(ValueError, match="clip_cov_ub=1.0"):
        policy_loss("clip_cov", lp, old, adv, mask, clip_cov_lb=1.0, clip_cov_ub=1.0)


def test_kl_cov_matches_loop():
    lp, old, adv, mask = _inputs(b=16, t=12, spread=0.3, adv_scale=2.0)
    frac, coef = 0.05, 0.7
    loss, m = policy_loss("kl_cov", lp, old, adv, mask, kl_cov_ratio=frac, ppo_kl_coef=coef)
    cov = _cov(adv, lp, mask)
    cov[~mask] = -float("inf")
    k = max(int(frac * int(mask.sum())), 1)
    top = set(cov.flatten().topk(k).indices.tolist())
    t = lp.shape[1]

    def tok(i, j):
        v = -adv[i, j] * torch.exp(lp[i, j] - old[i, j])
        if i * t + j in top:
            v = v + coef * (lp[i, j] - old[i, j]).abs()
        return v

    _check(loss, aggregate_loss(_loop_matrix(lp, mask, tok), mask, "token-mean"), lp)
    assert m["klfrac_cov"].item() == pytest.approx(k / int(mask.sum()))
    assert m["clipfrac"].item() == 0.0
    # a generator only permutes before top-k: without ties, the same tokens are chosen
    l2, _ = policy_loss("kl_cov", lp, old, adv, mask, kl_cov_ratio=frac, ppo_kl_coef=coef,
                        generator=torch.Generator().manual_seed(3))
    assert_close(l2, loss)


# ----------------------------------------------------------------------------- entropy bonus, KL
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_policy_loss_entropy_and_kl_terms(mode):
    lp, old, adv, mask = _inputs()
    g = torch.Generator().manual_seed(9)
    ent = torch.rand(lp.shape, generator=g, dtype=lp.dtype).requires_grad_()
    ref = lp.detach() + 0.3 * torch.randn(lp.shape, generator=g, dtype=lp.dtype)
    base, _ = policy_loss("ppo", lp, old, adv, mask, loss_agg_mode=mode)
    loss, m = policy_loss("ppo", lp, old, adv, mask, loss_agg_mode=mode, entropy=ent,
                          entropy_coeff=0.01, ref_logprobs=ref, kl_loss_coef=0.1, kl_loss_type="k2")
    h = aggregate_loss(ent, mask, mode)
    kl = aggregate_loss(kl_penalty(lp, ref, "k2"), mask, mode)
    _check(loss, base - 0.01 * h + 0.1 * kl, lp)
    assert_close(m["entropy"], h.detach())
    assert_close(m["kl_ref"], kl.detach())
    assert_close(m["pg_loss"], base.detach())
    (ge,) = torch.autograd.grad(loss, ent)
    assert_close(ge, torch.autograd.grad(-0.01 * h, ent)[0])
    # default aggregation of the extra terms follows the loss's own default (gspo: seq-mean)
    l_g, m_g = policy_loss("gspo", lp, old, adv, mask, entropy=ent)
    assert_close(m_g["entropy"], aggregate_loss(ent, mask, "seq-mean-token-mean").detach())
    with pytest.raises(ValueError, match="kl_loss_coef=0.1 needs"):
        policy_loss("ppo", lp, old, adv, mask, kl_loss_coef=0.1)
    with pytest.raises(ValueError, match="entropy_coeff=0.1 needs"):
        policy_loss("ppo", lp, old, adv, mask, entropy_coeff=0.1)


def test_every_loss_reports_the_common_metrics():
    lp, old, adv, mask = _inputs()
    for name in POLICY_LOSSES:
        _, m = policy_loss(name, lp, old, adv, mask)
        for k in ("clipfrac_low", "clipfrac_high", "clipfrac", "ratio_mean", "approx_kl", "pg_loss"):
            assert k in m and m[k].dim() == 0 and not m[k].requires_grad, (name, k)


def test_bf16_logprobs_are_upcast():
    lp, old, adv, mask = _inputs(dtype=torch.float32)
    lp16 = lp.detach().bfloat16().requires_grad_()
    loss, _ = policy_loss("ppo", lp16, old.bfloat16(), adv, mask)
    assert loss.dtype == torch.float32
    loss.backward()
    assert lp16.grad.dtype == torch.bfloat16


def test_policy_loss_keys():
    assert "clip_ratio_high" in policy_loss_keys("ppo")
    assert "clip_ratio_low" not in policy_loss_keys("reinforce")
    assert "generator" in policy_loss_keys("clip_cov") and "generator" in policy_loss_keys("kl_cov")
    assert "kl_loss_coef" in policy_loss_keys("gspo")
    with pytest.raises(ValueError, match="unknown"):
        policy_loss_keys("grpo")
    # every listed key is really accepted
    lp, old, adv, mask = _inputs()
    generic = dict(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0, clip_ratio=0.1,
                   loss_agg_mode="token-mean", kl_loss_coef=0.0)
    for name in POLICY_LOSSES:
        keys = policy_loss_keys(name)
        policy_loss(name, lp, old, adv, mask, **{k: v for k, v in generic.items() if k in keys})

"""rlx.objectives against hand-computed values and loop-based re-statements of each formula."""

import math

import pytest
import torch
from torch.testing import assert_close

from rlx.objectives import (
    ADVANTAGE_ESTIMATORS,
    POLICY_LOSSES,
    advantage_keys,
    aggregate_loss,
    compute_advantages,
    dr_grpo_advantages,
    dynamic_sampling_mask,
    entropy_from_logits,
    grpo_advantages,
    kl_penalty,
    logprobs_and_entropy,
    logprobs_from_logits,
    loop_advantages,
    policy_loss,
    predicted_entropy_change,
    repo_r,
    rloo_advantages,
)

torch.set_default_dtype(torch.float32)


# ----------------------------------------------------------------------------- advantages
def test_grpo_hand_computed():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    # group 1: mean 0.75, unbiased std = sqrt(0.25) = 0.5
    expected = torch.tensor([0.5, -1.5, 0.5, 0.5, 0, 0, 0, 0])
    assert_close(grpo_advantages(r, 4, eps=0.0), expected)
    # "none": centred only (Dr.GRPO)
    assert_close(grpo_advantages(r, 4, scale="none"), torch.tensor([0.25, -0.75, 0.25, 0.25, 0, 0, 0, 0]))
    assert_close(dr_grpo_advantages(r, 4), grpo_advantages(r, 4, scale="none"))
    # "batch": centred per group, scaled by the whole batch's unbiased std
    sb = r.std().item()
    assert_close(grpo_advantages(r, 4, scale="batch", eps=0.0), torch.tensor([0.25, -0.75, 0.25, 0.25, 0, 0, 0, 0]) / sb)


def _grpo_loop(r, g, eps):
    out = []
    for s in range(0, len(r), g):
        grp = r[s:s + g]
        mu = sum(grp) / g
        sd = math.sqrt(sum((x - mu) ** 2 for x in grp) / (g - 1)) if g > 1 else 0.0
        out += [(x - mu) / (sd + eps) for x in grp]
    return torch.tensor(out)


def _rloo_loop(r, g):
    out = []
    for s in range(0, len(r), g):
        grp = r[s:s + g]
        for i, x in enumerate(grp):
            out.append(x - sum(y for j, y in enumerate(grp) if j != i) / (g - 1))
    return torch.tensor(out)


@pytest.mark.parametrize("g", [1, 2, 3, 6])
def test_grpo_matches_loop(g):
    gen = torch.Generator().manual_seed(g)
    r = torch.randn(4 * g, generator=gen)
    assert_close(grpo_advantages(r, g), _grpo_loop(r.tolist(), g, 1e-6))


@pytest.mark.parametrize("g", [2, 3, 6])
def test_rloo_and_loop_match_loop(g):
    r = torch.randint(0, 2, (5 * g,), generator=torch.Generator().manual_seed(g)).float()
    assert_close(rloo_advantages(r, g), _rloo_loop(r.tolist(), g))
    assert_close(loop_advantages(r, g), _rloo_loop(r.tolist(), g))
    # identity: R_i - mean_{j!=i} = G/(G-1) (R_i - mean)
    assert_close(rloo_advantages(r, g), grpo_advantages(r, g, scale="none") * g / (g - 1))


def test_advantage_edge_cases():
    same = torch.full((8,), 0.7)
    for name in ADVANTAGE_ESTIMATORS:
        a = compute_advantages(name, same, 4)
        assert torch.equal(a, torch.zeros(8)), name  # all-equal rewards: no signal, no NaN
    one = torch.tensor([1.0, 0.0, 3.0])
    assert torch.equal(grpo_advantages(one, 1), torch.zeros(3))  # group of one: own baseline
    assert torch.equal(dr_grpo_advantages(one, 1), torch.zeros(3))
    with pytest.raises(ValueError, match="group_size=1"):
        rloo_advantages(one, 1)
    with pytest.raises(ValueError, match="multiple of group_size=2"):
        grpo_advantages(one, 2)
    with pytest.raises(ValueError, match="scale='bogus'"):
        grpo_advantages(one, 1, scale="bogus")
    ints = torch.tensor([1, 0, 1, 1])
    assert grpo_advantages(ints, 2).dtype == torch.float32


def test_compute_advantages_registry():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert set(ADVANTAGE_ESTIMATORS) == {"grpo", "rloo", "loop", "dr_grpo"}
    assert_close(compute_advantages("grpo", r, 2, scale="none"), grpo_advantages(r, 2, scale="none"))
    with pytest.raises(ValueError, match=r"unknown; allowed: \['dr_grpo', 'grpo', 'loop', 'rloo'\]"):
        compute_advantages("ppo", r, 2)
    with pytest.raises(TypeError, match="does not take key"):
        compute_advantages("rloo", r, 2, scale="group")
    assert advantage_keys("grpo") == ("scale", "eps")
    assert advantage_keys("rloo") == advantage_keys("dr_grpo") == ()
    with pytest.raises(ValueError, match="unknown"):
        advantage_keys("ppo")


def test_dynamic_sampling_mask():
    r = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.5, 0.5])
    keep = dynamic_sampling_mask(r, 2)
    assert keep.tolist() == [False, False, False, False, True, True, False, False]
    assert int((~keep).sum()) // 2 == 3


# ----------------------------------------------------------------------------- aggregation
def _agg_loop(lm, mask, mode, n_tok=None, n_seq=None, max_len=None):
    b, t = lm.shape
    valid_rows = [i for i in range(b) if mask[i].any()]
    n_tok = n_tok if n_tok is not None else float(mask.sum())
    n_seq = n_seq if n_seq is not None else len(valid_rows)
    max_len = max_len if max_len is not None else t
    if mode == "token-mean":
        return sum(lm[i, j] for i in range(b) for j in range(t) if mask[i, j]) / n_tok
    total = 0.0
    for i in valid_rows:
        toks = [lm[i, j] for j in range(t) if mask[i, j]]
        if mode == "seq-mean-token-mean":
            total += sum(toks) / len(toks)
        elif mode == "seq-mean-token-sum":
            total += sum(toks)
        else:
            total += sum(toks) / max_len
    return total / n_seq


def _batch(b=6, t=7, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return g, mask


MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


@pytest.mark.parametrize("mode", MODES)
def test_aggregate_matches_loop(mode):
    g, mask = _batch()
    mask[2] = False  # a fully masked row
    lm = torch.randn(mask.shape, generator=g)
    lm[~mask] = float("nan")  # padding garbage must not leak
    got = aggregate_loss(lm, mask, mode)
    exp = _agg_loop(lm, mask, mode)
    assert_close(got, torch.tensor(float(exp)))
    got = aggregate_loss(lm, mask, mode, global_tokens=50, global_seqs=9, max_response_length=11)
    assert_close(got, torch.tensor(float(_agg_loop(lm, mask, mode, 50, 9, 11))))


def test_aggregate_empty_and_bad_mode():
    lm = torch.randn(2, 3, requires_grad=True)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    for mode in MODES:
        out = aggregate_loss(lm, mask, mode)
        assert out.item() == 0.0
        out.backward()
        assert torch.equal(lm.grad, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="loss_agg_mode='mean'"):
        aggregate_loss(lm, mask, "mean")


# ----------------------------------------------------------------------------- losses
def _loss_inputs(b=6, t=7, seed=0, spread=0.4):
    g, mask = _batch(b, t, seed)
    logits = torch.randn(b, t, 5, generator=g)
    labels = torch.randint(0, 5, (b, t), generator=g)
    lp = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    old = lp + spread * torch.randn(b, t, generator=g)
    adv = torch.randn(b, generator=g)
    adv[0] = 0.0
    return lp.clone().requires_grad_(), old, adv[:, None].expand(b, t).contiguous(), mask


def _ppo_loop(lp, old, adv, mask, low, high, c):
    """Per-token loss matrix, written out with scalar Python."""
    b, t = len(lp), len(lp[0])
    out = torch.zeros(b, t, dtype=torch.float64)
    stats = dict(low=0, high=0, n=0)
    for i in range(b):
        for j in range(t):
            if not mask[i][j]:
                continue
            r = math.exp(lp[i][j] - old[i][j])
            a = adv[i][j]
            unclipped, clipped = -a * r, -a * min(max(r, 1 - low), 1 + high)
            v = max(unclipped, clipped)
            if c is not None and a < 0:
                v = min(v, -a * c)
            out[i, j] = v
            stats["n"] += 1
            stats["low"] += a < 0 and r < 1 - low
            stats["high"] += a > 0 and r > 1 + high
    return out, stats


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("clip", [(0.2, 0.2, None), (0.2, 0.28, None), (0.1, 0.3, 3.0)])
def test_ppo_matches_loop_value_and_grad(mode, clip):
    low, high, c = clip
    lp, old, adv, mask = _loss_inputs(spread=0.6)
    loss, m = policy_loss("ppo", lp, old, adv, mask, clip_ratio_low=low, clip_ratio_high=high,
                          clip_ratio_c=c, loss_agg_mode=mode)
    (g,) = torch.autograd.grad(loss, lp)

    lp64 = lp.detach().double().requires_grad_()
    # differentiable loop: rebuild the per-token matrix from torch scalars
    b, t = lp.shape
    rows = []
    for i in range(b):
        row = []
        for j in range(t):
            if not mask[i, j]:
                row.append(torch.zeros((), dtype=torch.float64))
                continue
            r = torch.exp(lp64[i, j] - old[i, j].double())
            a = float(adv[i, j])
            v = torch.maximum(-a * r, -a * r.clamp(1 - low, 1 + high))
            if c is not None and a < 0:
                v = torch.minimum(v, torch.tensor(-a * c, dtype=torch.float64))
            row.append(v)
        rows.append(torch.stack(row))
    lm = torch.stack(rows)
    ref = aggregate_loss(lm, mask, mode)
    (gref,) = torch.autograd.grad(ref, lp64)
    assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    assert_close(g.double(), gref, rtol=1e-5, atol=1e-6)

    _, st = _ppo_loop(lp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), low, high, c)
    assert st["low"] + st["high"] > 0  # the test exercises clipping
    assert_close(m["clipfrac_low"], torch.tensor(st["low"] / st["n"]))
    assert_close(m["clipfrac_high"], torch.tensor(st["high"] / st["n"]))
    assert_close(m["clipfrac"], torch.tensor((st["low"] + st["high"]) / st["n"]))
    ratio = torch.exp(lp.detach() - old)
    assert_close(m["ratio_mean"], ratio[mask].mean())
    assert_close(m["approx_kl"], (old - lp.detach())[mask].mean())
    assert all(v.dim() == 0 and not v.requires_grad for v in m.values())


def test_reinforce_value_grad_and_metrics():
    lp, old, adv, mask = _loss_inputs()
    loss, m = policy_loss("reinforce", lp, lp.detach(), adv, mask, loss_agg_mode="seq-mean-token-sum")
    n_seq = int(mask.any(-1).sum())
    exp = sum(-adv[i, j] * lp[i, j] for i in range(6) for j in range(7) if mask[i, j]) / n_seq
    assert_close(loss, exp)
    (g,) = torch.autograd.grad(loss, lp)
    assert_close(g, torch.where(mask, -adv / n_seq, torch.zeros_like(adv)))
    for k in ("clipfrac_low", "clipfrac_high", "clipfrac"):
        assert m[k].item() == 0.0
    assert m["ratio_mean"].item() == pytest.approx(1.0)
    assert m["approx_kl"].item() == 0.0


def test_ppo_on_policy_equals_reinforce_gradient():
    """At r = 1 the clipped surrogate's gradient is the REINFORCE gradient."""
    lp, _, adv, mask = _loss_inputs()
    g1 = torch.autograd.grad(policy_loss("ppo", lp, lp.detach(), adv, mask)[0], lp)[0]
    g2 = torch.autograd.grad(policy_loss("reinforce", lp, lp.detach(), adv, mask)[0], lp)[0]
    assert_close(g1, g2)


def test_hand_computed_ppo_clip_sides():
    # one token each: (A, r) chosen so each case is unambiguous
    adv = torch.tensor([[1.0], [1.0], [-1.0], [-1.0], [-1.0]])
    r = torch.tensor([[1.5], [0.5], [0.5], [1.5], [5.0]])
    old = torch.zeros(5, 1)
    lp = r.log().requires_grad_()
    mask = torch.ones(5, 1, dtype=torch.bool)
    loss, m = policy_loss("ppo", lp, old, adv, mask, clip_ratio_low=0.2, clip_ratio_high=0.28,
                          clip_ratio_c=3.0, loss_agg_mode="token-mean")
    # per token: -1.28 (clipped high), -0.5, +0.8 (clipped low), +1.5, min(5, 3) = 3 (dual)
    assert_close(loss, torch.tensor((-1.28 - 0.5 + 0.8 + 1.5 + 3.0) / 5))
    (g,) = torch.autograd.grad(loss, lp)
    # d/dlp of -A r = -A r for unclipped tokens; 0 where a clip binds
    assert_close(g, torch.tensor([[0.0], [-0.5], [0.0], [1.5], [0.0]]) / 5)
    assert m["clipfrac_high"].item() == pytest.approx(1 / 5)
    assert m["clipfrac_low"].item() == pytest.approx(1 / 5)
    assert m["clipfrac_dual"].item() == pytest.approx(1 / 5)


def test_loss_edge_cases_masked_garbage_and_neg_inf():
    lp, old, adv, mask = _loss_inputs()
    lp_bad = lp.detach().clone()
    lp_bad[~mask] = float("-inf")
    old_bad = old.clone()
    old_bad[~mask] = float("-inf")
    adv_bad = adv.clone()
    adv_bad[~mask] = float("nan")
    lp_bad.requires_grad_()
    for name in POLICY_LOSSES:
        loss, m = policy_loss(name, lp_bad, old_bad, adv_bad, mask)
        ref, _ = policy_loss(name, lp.detach(), old, adv, mask)
        assert_close(loss, ref)
        (g,) = torch.autograd.grad(loss, lp_bad)
        assert torch.isfinite(g).all() and torch.equal(g[~mask], torch.zeros_like(g[~mask]))
        assert all(torch.isfinite(v) for v in m.values()), name
    # a valid token whose old log-prob is -inf: the ratio is clamped, the loss stays finite
    old2 = old.clone()
    old2[0, 0] = float("-inf")
    loss, m = policy_loss("ppo", lp, old2, adv + 1.0, mask)
    assert torch.isfinite(loss) and m["clipfrac_high"] > 0


def test_fully_masked_and_zero_advantage():
    lp, old, adv, mask = _loss_inputs()
    none = torch.zeros_like(mask)
    for name in POLICY_LOSSES:
        loss, m = policy_loss(name, lp, old, adv, none)
        assert loss.item() == 0.0 and all(v.item() == 0.0 for v in m.values())
        loss, m = policy_loss(name, lp, old, torch.zeros_like(adv), mask)
        (g,) = torch.autograd.grad(loss, lp)
        if name == "kl_cov":  # its |lp - lp_old| penalty acts whatever A is, on the selected tokens
            assert int((g != 0).sum()) <= int(m["klfrac_cov"] * mask.sum() + 0.5)
        else:
            assert torch.equal(g, torch.zeros_like(g)), name


def test_policy_loss_registry_errors():
    lp, old, adv, mask = _loss_inputs()
    with pytest.raises(ValueError, match="policy loss 'grpo' is unknown; allowed"):
        policy_loss("grpo", lp, old, adv, mask)
    with pytest.raises(TypeError, match=r"'reinforce' does not take key\(s\) \['clip_ratio_low'\]"):
        policy_loss("reinforce", lp, old, adv, mask, clip_ratio_low=0.2)
    with pytest.raises(ValueError, match="clip_ratio_c=0.5"):
        policy_loss("ppo", lp, old, adv, mask, clip_ratio_c=0.5)
    with pytest.raises(ValueError, match="shape mismatch"):
        policy_loss("ppo", lp, old[:, :3], adv, mask)


def test_advantage_vector_is_broadcast():
    lp, old, adv, mask = _loss_inputs()
    a, _ = policy_loss("ppo", lp, old, adv[:, 0], mask)
    b, _ = policy_loss("ppo", lp, old, adv, mask)
    assert_close(a, b)


# ----------------------------------------------------------------------------- KL
def test_kl_estimators():
    lp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -1.0, -0.5])
    d = lp - ref
    assert_close(kl_penalty(lp, ref, "k1"), d)
    assert_close(kl_penalty(lp, ref, "k2"), 0.5 * d ** 2)
    assert_close(kl_penalty(lp, ref, "k3"), torch.exp(ref - lp) - (ref - lp) - 1)
    assert_close(kl_penalty(lp, ref, "low_var_kl"), kl_penalty(lp, ref, "k3"))
    assert (kl_penalty(lp, ref, "k3") >= 0).all()
    with pytest.raises(ValueError, match="kl kind='k4'"):
        kl_penalty(lp, ref, "k4")


def test_kl_estimators_are_unbiased_or_not_in_expectation():
    """k1 and k3 are unbiased estimators of KL(pi||ref) under a ~ pi."""
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.2, 0.6])
    true_kl = (p * (p / q).log()).sum()
    for kind in ("k1", "k3"):
        est = (p * kl_penalty(p.log(), q.log(), kind)).sum()
        assert_close(est, true_kl)


# ----------------------------------------------------------------------------- entropy / log-probs
def _ref_lp_h(logits, labels):
    logp = torch.log_softmax(logits.float(), -1)
    return logp.gather(-1, labels[..., None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_entropy_and_logprobs_match_reference_with_grads(chunk):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(3, 5, 11, generator=g)).requires_grad_()
    labels = torch.randint(0, 11, (3, 5), generator=g)
    w_lp, w_h = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    lp, h = logprobs_and_entropy(logits, labels, chunk_size=chunk)
    rlp, rh = _ref_lp_h(logits, labels)
    assert_close(lp, rlp)
    assert_close(h, rh)
    assert_close(entropy_from_logits(logits, chunk), rh)
    assert_close(logprobs_from_logits(logits, labels, chunk), rlp)
    for out, ref in [((lp * w_lp + h * w_h).sum(), (rlp * w_lp + rh * w_h).sum()),
                     ((entropy_from_logits(logits, chunk) * w_h).sum(), (rh * w_h).sum()),
                     ((logprobs_from_logits(logits, labels, chunk) * w_lp).sum(), (rlp * w_lp).sum())]:
        (g1,) = torch.autograd.grad(out, logits, retain_graph=True)
        (g2,) = torch.autograd.grad(ref, logits, retain_graph=True)
        assert_close(g1, g2)


def test_entropy_gradcheck_double():
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 6, (4,))
    # outputs are fp32 by contract, so compare the analytic gradient to a float64 reference
    f = lambda x: (torch.log_softmax(x, -1) * torch.softmax(x, -1)).sum(-1).neg()
    (g1,) = torch.autograd.grad(entropy_from_logits(logits, 3).sum(), logits)
    (g2,) = torch.autograd.grad(f(logits).sum(), logits)
    assert_close(g1, g2, rtol=1e-5, atol=1e-6)
    assert g1.dtype == torch.float64


def test_entropy_bf16_input_gives_fp32_and_grad_in_input_dtype():
    logits = torch.randn(2, 4, 50).bfloat16().requires_grad_()
    labels = torch.randint(0, 50, (2, 4))
    lp, h = logprobs_and_entropy(logits, labels, chunk_size=3)
    assert lp.dtype == h.dtype == torch.float32
    rlp, rh = _ref_lp_h(logits.detach(), labels)  # fp32 math on the bf16 values
    assert_close(lp, rlp)
    assert_close(h, rh)
    (h.sum() + lp.sum()).backward()
    assert logits.grad.dtype == torch.bfloat16


def test_entropy_edge_cases():
    logits = torch.tensor([[0.0, float("-inf"), 0.0], [5.0, 5.0, 5.0]], requires_grad=True)
    h = entropy_from_logits(logits)
    assert_close(h, torch.tensor([math.log(2), math.log(3)]))
    h.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert entropy_from_logits(torch.zeros(0, 4)).shape == (0,)
    with pytest.raises(ValueError, match="chunk_size=0"):
        entropy_from_logits(logits, 0)
    with pytest.raises(ValueError, match="labels shape"):
        logprobs_from_logits(logits, torch.zeros(3, dtype=torch.long))


# ----------------------------------------------------------------------------- REPO-R
def _repo_r_loop(a, lp, zeta, variant, floor=-20.0):
    lp = max(lp, floor)
    if a > 0:
        return max(0.0, a * (1 - zeta * lp))
    if a < 0:
        return min(0.0, a * (1 + zeta * lp)) if variant == "signed" else a
    return 0.0


@pytest.mark.parametrize("variant", ["signed", "positive_only"])
@pytest.mark.parametrize("zeta", [0.0, 0.05, 0.5, -0.05, -0.5])
def test_repo_r_matches_loop(variant, zeta):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 6, generator=g)
    a[0, :2] = 0.0
    lp = -torch.rand(4, 6, generator=g) * 8
    lp[1, 0] = float("-inf")
    lp[1, 1] = -40.0
    got = repo_r(a, lp, zeta, variant)
    exp = torch.tensor([[_repo_r_loop(x, y, zeta, variant) for x, y in zip(ra, rl)]
                        for ra, rl in zip(a.tolist(), lp.tolist())])
    assert_close(got, exp)
    assert not got.requires_grad


def test_repo_r_hand_computed_and_detached():
    a = torch.tensor([[1.0, -1.0, 0.0, -1.0]])
    lp = torch.tensor([[-2.0, -2.0, -2.0, -30.0]], requires_grad=True)
    out = repo_r(a, lp, 0.1)
    # 1*(1+0.2)=1.2; -1*(1-0.2)=-0.8; 0; floor -20: -1*(1-2)=+1 -> clamped to 0
    assert_close(out, torch.tensor([[1.2, -0.8, 0.0, 0.0]]))
    assert not out.requires_grad
    with pytest.raises(ValueError, match="variant='both'"):
        repo_r(a, lp, 0.1, variant="both")


# ----------------------------------------------------------------------------- Theorem 1 estimate
def test_predicted_entropy_change_formula():
    g = torch.Generator().manual_seed(3)
    a, lp, h = torch.randn(3, 4, generator=g), -torch.rand(3, 4, generator=g) * 3, torch.rand(3, 4, generator=g)
    mask = torch.rand(3, 4, generator=g) > 0.3
    terms = [-(a[i, j] * (lp[i, j] + h[i, j]) * lp[i, j].exp()) for i in range(3) for j in range(4) if mask[i, j]]
    assert_close(predicted_entropy_change(a, lp, h, mask), torch.stack(terms).mean())
    assert predicted_entropy_change(a, lp, h, torch.zeros_like(mask)).item() == 0.0

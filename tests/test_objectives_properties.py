"""Property tests (hypothesis): REPO-R preserves the sign of the advantage; every controller
stays inside its bounds and moves its knob in the right direction."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlx.control import AdaptiveEntropyCoefController, ClipHighController, ZetaController
from rlx.objectives import aggregate_loss, repo_r

SETTINGS = settings(max_examples=60, deadline=None)
finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)
logprob = st.one_of(st.floats(-1e4, 0.0, allow_nan=False), st.just(-math.inf))


@SETTINGS
@given(st.lists(st.tuples(finite, logprob), min_size=1, max_size=40),
       st.floats(-2.0, 2.0, allow_nan=False), st.sampled_from(["signed", "positive_only"]))
def test_repo_r_preserves_sign(pairs, zeta, variant):
    a = torch.tensor([[p[0] for p in pairs]], dtype=torch.float64)
    lp = torch.tensor([[p[1] for p in pairs]], dtype=torch.float64)
    out = repo_r(a, lp, zeta, variant)
    assert torch.isfinite(out).all()
    assert (out[a > 0] >= 0).all() and (out[a < 0] <= 0).all() and (out[a == 0] == 0).all()
    if zeta >= 0:  # entropy-raising direction: rare correct boosted, rare wrong penalised less
        assert (out[a > 0] >= a[a > 0] - 1e-9).all()
        assert (out[a < 0] >= a[a < 0] - 1e-9).all()
    else:
        assert (out[a > 0] <= a[a > 0] + 1e-9).all()
        if variant == "signed":
            assert (out[a < 0] <= a[a < 0] + 1e-9).all()
    if variant == "positive_only":
        assert torch.equal(out[a < 0], a[a < 0])


entropies = st.lists(st.floats(0.0, 5.0, allow_nan=False), min_size=1, max_size=60)


@SETTINGS
@given(st.floats(1e-5, 0.1), st.floats(1.0, 1e3), st.floats(-1.0, 1.0), entropies, st.floats(0.0, 5.0))
def test_zeta_controller_bounds_and_direction(zmin, span, init_frac, hs, h0):
    zmax = zmin * span
    init = 0.0 if abs(init_frac) < 0.1 else math.copysign(zmin + (zmax - zmin) * abs(init_frac), init_frac)
    c = ZetaController(zeta_init=init, zeta_min=zmin, zeta_max=zmax)
    c.set_target(h0)
    for h in hs:
        before = c.zeta
        z = c.update(h)
        assert z == 0 or zmin * (1 - 1e-12) <= abs(z) <= zmax * (1 + 1e-12)
        if h < c.target:
            assert z >= before
        elif h > c.target:
            assert z <= before
        else:
            assert z == before
        if h != c.target:
            assert z != 0  # once moved, zeta never returns to exactly 0


@SETTINGS
@given(st.floats(0.01, 0.5), st.floats(1.0, 10.0), st.floats(0, 1), st.floats(1.01, 3.0),
       st.sampled_from(["multiplicative", "additive"]), st.floats(0.0, 0.5), entropies, st.floats(0.0, 5.0))
def test_clip_high_bounds_and_direction(emin, span, init_frac, factor, mode, dead_band, hs, h0):
    emax = emin * span
    c = ClipHighController(eps_init=emin + (emax - emin) * init_frac, eps_min=emin, eps_max=emax,
                           factor=factor, mode=mode, step=0.05, dead_band=dead_band)
    c.set_target(h0)
    for h in hs:
        before = c.eps_high
        e = c.update(h)
        assert emin <= e <= emax
        if h < c.target - dead_band:
            assert e >= before
        elif h > c.target + dead_band:
            assert e <= before
        else:
            assert e == before


@SETTINGS
@given(st.floats(0.0, 0.05), st.floats(1e-4, 0.05), st.floats(0.0, 0.5), entropies, st.floats(0.0, 5.0))
def test_entropy_coef_bounds(cmin, delta, extra, hs, h0):
    cmax = cmin + extra
    c = AdaptiveEntropyCoefController(coef_init=cmin, delta=delta, coef_min=cmin, coef_max=cmax)
    c.set_target(h0)
    for h in hs:
        eff = c.update(h)
        assert cmin <= c.coef <= cmax
        assert eff == (c.coef if h < c.target else 0.0)


@SETTINGS
@given(st.lists(st.integers(0, 6), min_size=2, max_size=10), st.integers(1, 9),
       st.sampled_from(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]))
def test_aggregation_split_invariance(lengths, cut, mode):
    b, t = len(lengths), 6
    g = torch.Generator().manual_seed(sum(lengths) + cut)
    lm = torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    cut = cut % b
    kw = dict(global_tokens=mask.sum(), global_seqs=mask.any(-1).sum(), max_response_length=t)
    full = aggregate_loss(lm, mask, mode, **kw)
    parts = aggregate_loss(lm[:cut], mask[:cut], mode, **kw) + aggregate_loss(lm[cut:], mask[cut:], mode, **kw)
    assert torch.allclose(full, parts)

"""Entropy controllers: the doubling/halving rule, ADAPO, adaptive entropy coefficient."""

import math

import pytest

from rlx.control import AdaptiveEntropyCoefController, ClipHighController, ZetaController


def _zeta_rule(z, h, target, lo, hi):
    """The ZetaController rule of docs/method.md ("ZetaController"), written out case by case."""
    if h < target:
        if z > 0:
            return min(2 * z, hi)
        if z == 0:
            return lo
        z = z / 2
        return lo if abs(z) < lo else z
    if h > target:
        if z < 0:
            return max(2 * z, -hi)
        if z == 0:
            return -lo
        z = z / 2
        return -lo if z < lo else z
    return z


def test_zeta_hand_sequence():
    c = ZetaController(zeta_init=0.0, zeta_min=0.01, zeta_max=0.05)
    c.set_target(1.0)
    seq = [c.update(h) for h in [0.9, 0.9, 0.9, 0.9, 0.9, 1.0, 1.1, 1.1, 1.1, 1.1, 1.1, 1.1, 0.5, 0.5]]
    assert seq == pytest.approx([0.01, 0.02, 0.04, 0.05, 0.05, 0.05,
                                 0.025, 0.0125, -0.01, -0.02, -0.04, -0.05,
                                 -0.025, -0.0125])
    assert c.update(0.5) == pytest.approx(0.01)  # |-0.00625| < zeta_min -> +zeta_min
    c2 = ZetaController(zeta_min=0.01, zeta_max=0.05)
    c2.set_target(1.0)
    assert c2.update(2.0) == -0.01  # from 0, above target


def test_zeta_target_ratio_and_errors():
    c = ZetaController(zeta_init=0.02, zeta_min=0.01, zeta_max=0.05, target_ratio=0.8)
    with pytest.raises(RuntimeError, match="set_target"):
        c.update(1.0)
    assert c.set_target(2.0) == pytest.approx(1.6)
    assert c.update(1.7) == pytest.approx(0.01)  # above 1.6: halve
    with pytest.raises(ValueError, match="measured_entropy=nan"):
        c.update(math.nan)


@pytest.mark.parametrize("kwargs, name", [
    (dict(zeta_min=0.1, zeta_max=0.05), "zeta_max"),
    (dict(zeta_min=-1e-4), "zeta_min"),
    (dict(zeta_min=0.0), "zeta_min"),
    (dict(zeta_init=0.5), "zeta_init"),
    (dict(zeta_init=1e-5), "zeta_init"),
    (dict(target_ratio=0.0), "target_ratio"),
])
def test_zeta_validation(kwargs, name):
    with pytest.raises(ValueError, match=f"{name}="):
        ZetaController(**kwargs)


def test_zeta_matches_rule_on_synthetic_sequence():
    import random

    rng = random.Random(0)
    c = ZetaController(zeta_init=-0.03, zeta_min=1e-3, zeta_max=0.2)
    c.set_target(1.0)
    z = c.zeta
    for _ in range(200):
        h = rng.choice([0.5, 0.99, 1.0, 1.01, 1.5])
        z = _zeta_rule(z, h, 1.0, 1e-3, 0.2)
        assert c.update(h) == pytest.approx(z)
        assert c.zeta == 0 or 1e-3 <= abs(c.zeta) <= 0.2 + 1e-12


def test_state_dict_roundtrip():
    for c, knob in [(ZetaController(zeta_init=0.01, zeta_min=0.01), "zeta"),
                    (ClipHighController(), "eps_high"),
                    (AdaptiveEntropyCoefController(), "coef")]:
        c.set_target(1.0)
        for h in (0.5, 0.6, 1.5):
            c.update(h)
        d = c.state_dict()
        fresh = type(c)(**({"zeta_init": 0.01, "zeta_min": 0.01} if knob == "zeta" else {}))
        fresh.load_state_dict(d)
        assert fresh.state_dict() == d
        assert getattr(fresh, knob) == getattr(c, knob)
        assert fresh.update(0.1) == c.update(0.1)
        with pytest.raises(KeyError):
            fresh.load_state_dict({})


def test_clip_high_multiplicative_and_additive():
    c = ClipHighController(eps_init=0.28, eps_min=0.1, eps_max=0.5, factor=1.25)
    c.set_target(1.0)
    assert c.update(0.5) == pytest.approx(0.35)
    assert c.update(0.5) == pytest.approx(0.4375)
    assert c.update(0.5) == pytest.approx(0.5)  # capped
    assert c.update(1.0) == pytest.approx(0.5)  # on target
    assert c.update(2.0) == pytest.approx(0.4)
    a = ClipHighController(eps_init=0.28, mode="additive", step=0.1, dead_band=0.05)
    a.set_target(1.0)
    assert a.update(0.96) == pytest.approx(0.28)  # inside dead band
    assert a.update(0.9) == pytest.approx(0.38)
    assert a.update(1.2) == pytest.approx(0.28)
    assert a.update(1.2) == pytest.approx(0.18)
    assert a.update(1.2) == pytest.approx(0.1)  # floor eps_min


@pytest.mark.parametrize("kwargs, name", [
    (dict(factor=1.0), "factor"), (dict(factor=0.8), "factor"), (dict(eps_min=-0.1), "eps_min"),
    (dict(eps_min=0.5, eps_max=0.2), "eps_max"), (dict(eps_init=2.0), "eps_init"),
    (dict(mode="exp"), "mode"), (dict(step=0.0), "step"), (dict(dead_band=-1), "dead_band"),
])
def test_clip_high_validation(kwargs, name):
    with pytest.raises(ValueError, match=f"{name}="):
        ClipHighController(**kwargs)


def test_adaptive_entropy_coef():
    c = AdaptiveEntropyCoefController(coef_init=0.0, delta=0.01, coef_max=0.025)
    c.set_target(1.0)
    assert c.update(0.5) == pytest.approx(0.01)
    assert c.update(0.5) == pytest.approx(0.02)
    assert c.update(0.5) == pytest.approx(0.025)  # capped
    assert c.update(1.5) == 0.0  # above target: bonus off ...
    assert c.coef == pytest.approx(0.015)  # ... and the coefficient decays
    assert c.update(1.5) == 0.0 and c.update(1.5) == 0.0
    assert c.coef == 0.0
    for kwargs, name in [(dict(delta=0), "delta"), (dict(coef_min=-1), "coef_min"),
                         (dict(coef_max=-1), "coef_max"), (dict(coef_init=1.0), "coef_init")]:
        with pytest.raises(ValueError, match=f"{name}="):
            AdaptiveEntropyCoefController(**kwargs)


# ----------------------------------------------------------------------------- dynamics
def test_zeta_dynamics_on_a_collapse_then_overshoot_sequence():
    """Entropy collapses for 12 iterations, then overshoots for 12: zeta climbs from 0 to
    zeta_max in 1 + log2(zeta_max / zeta_min) steps and holds there; after the overshoot it halves,
    flips sign at zeta_min and doubles toward -zeta_max."""
    lo, hi = 1e-3, 0.064  # hi / lo = 2**6
    c = ZetaController(zeta_min=lo, zeta_max=hi)
    c.set_target(1.0)
    hs = [1.0 - 0.05 * k for k in range(1, 13)] + [1.2] * 12
    zs = [c.update(h) for h in hs]
    assert zs[:8] == pytest.approx([lo * 2 ** k for k in range(7)] + [hi])
    assert all(z == hi for z in zs[6:12])
    down = zs[12:]
    assert down[:7] == pytest.approx([hi / 2 ** k for k in range(1, 7)] + [-lo])
    assert down[7:] == pytest.approx([-lo * 2 ** k for k in range(1, 5)] + [-lo * 32])
    assert all(b <= a for a, b in zip(down, down[1:]))


def _closed_loop(controller, knob_effect, drift=0.05, iters=300, h0=1.0):
    """A toy plant: each iteration entropy drifts down by `drift` and the knob pushes it up by
    knob_effect(controller) (the regulator's sign convention); returns the entropy trace."""
    controller.set_target(h0)
    h, trace = h0, []
    for _ in range(iters):
        h = max(h - drift + knob_effect(controller), 0.0)
        trace.append(h)
        controller.update(h)
    return trace


def test_zeta_closed_loop_holds_the_target():
    c = ZetaController(zeta_min=1e-3, zeta_max=0.5)
    trace = _closed_loop(c, lambda ctl: 0.2 * ctl.zeta)  # max push 0.1 > drift 0.05
    tail = trace[100:]
    assert max(abs(h - 1.0) for h in tail) < 0.15
    assert abs(sum(tail) / len(tail) - 1.0) < 0.05
    # without the controller the same plant collapses
    assert _closed_loop(ZetaController(zeta_min=1e-3, zeta_max=1e-3), lambda ctl: 0.0)[-1] == 0.0


def test_zeta_closed_loop_saturates_when_too_weak():
    """zeta_max too small for the drift (findings.md lesson 2): zeta pins at zeta_max, entropy falls."""
    c = ZetaController(zeta_min=1e-4, zeta_max=0.05)
    trace = _closed_loop(c, lambda ctl: 0.2 * ctl.zeta, iters=100)
    assert c.zeta == 0.05 and trace[-1] < trace[20] < 1.0


def test_clip_high_dynamics():
    c = ClipHighController(eps_init=0.28, eps_min=0.1, eps_max=1.0, factor=1.25)
    c.set_target(1.0)
    ups = [c.update(0.5) for _ in range(8)]
    # ceil(log(1.0 / 0.28) / log(1.25)) = 6 steps to the cap
    assert ups[4] < 1.0 and ups[5] == 1.0 and ups[7] == 1.0
    assert all(b >= a for a, b in zip(ups, ups[1:]))
    downs = [c.update(1.5) for _ in range(12)]
    assert all(b <= a for a, b in zip(downs, downs[1:]))
    assert downs[-1] == 0.1 and downs[9] > 0.1
    trace = _closed_loop(ClipHighController(), lambda ctl: 0.1 * (ctl.eps_high - 0.28))
    assert min(trace[50:]) > 0.8  # a strong enough eps_high lever holds the entropy


def test_adaptive_entropy_coef_dynamics():
    c = AdaptiveEntropyCoefController(coef_init=0.0, delta=0.005, coef_max=0.02)
    c.set_target(1.0)
    effs = [c.update(h) for h in [0.9] * 6 + [1.1] * 6]
    assert effs[:6] == pytest.approx([0.005, 0.01, 0.015, 0.02, 0.02, 0.02])
    assert effs[6:] == [0.0] * 6
    assert c.coef == 0.0


def test_at_bound_says_when_the_knob_sits_at_a_limit():
    zeta = ZetaController(zeta_init=0.0, zeta_min=0.25, zeta_max=1.0)
    zeta.set_target(1.0)
    flags = []
    for h in (0.5, 0.5, 0.5, 0.5, 1.5):  # 0.25, 0.5, 1.0, 1.0 (capped), then halved to 0.5
        zeta.update(h)
        flags.append(zeta.at_bound)
    assert flags == [False, False, True, True, False]  # |zeta| = zeta_min is the sign flip, not a bound
    clip = ClipHighController(eps_init=0.8, eps_min=0.1, eps_max=1.0, factor=1.25)
    clip.set_target(1.0)
    clip.update(0.5)
    assert clip.eps_high == 1.0 and clip.at_bound
    clip.update(1.5)
    assert clip.eps_high == pytest.approx(0.8) and not clip.at_bound
    coef = AdaptiveEntropyCoefController(coef_init=0.0, delta=0.05, coef_max=0.1)
    coef.set_target(1.0)
    assert coef.at_bound  # at coef_min
    coef.update(0.5)
    assert not coef.at_bound
    coef.update(0.5)
    assert coef.coef == pytest.approx(0.1) and coef.at_bound

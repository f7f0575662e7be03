"""Stateful entropy controllers, updated once per RL iteration from the measured entropy.

Each controller holds a target entropy, set once from the iteration-0 entropy:
    target = entropy0 * target_ratio     (set_target)
and moves one knob toward it on every `update(measured_entropy)`, returning the knob's new value:
  ZetaController                 REPO's signed zeta
  ClipHighController             ADAPO's eps_high
  AdaptiveEntropyCoefController  Skywork-OR1's entropy-bonus coefficient
state_dict() / load_state_dict() round-trip everything that changes during training.
The rules, and what entropy the trainer feeds them, are in docs/method.md, "Controllers".
"""

from __future__ import annotations

import math


def _require(cond: bool, name: str, value, allowed: str) -> None:
    if not cond:
        raise ValueError(f"{name}={value!r} is invalid; {allowed}")


def _finite(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is invalid; must be a finite number") from None
    _require(math.isfinite(v), name, value, "must be a finite number")
    return v


class _TargetController:
    """Target bookkeeping shared by the controllers."""

    _knob: str = ""  # name of the attribute the controller moves

    def __init__(self, target_ratio: float):
        target_ratio = _finite("target_ratio", target_ratio)
        _require(target_ratio > 0, "target_ratio", target_ratio, "must be > 0")
        self.target_ratio = target_ratio
        self.target: float | None = None
        self.num_updates = 0

    def set_target(self, entropy0: float) -> float:
        """target = entropy0 * target_ratio (entropy0: the policy's entropy at iteration 0)."""
        entropy0 = _finite("entropy0", entropy0)
        _require(entropy0 >= 0, "entropy0", entropy0, "must be >= 0 (an entropy)")
        self.target = entropy0 * self.target_ratio
        return self.target

    def _direction(self, measured_entropy: float, dead_band: float = 0.0) -> int:
        """+1: entropy below target (push the knob toward more entropy), -1: above, 0: within."""
        h = _finite("measured_entropy", measured_entropy)
        if self.target is None:
            raise RuntimeError(
                f"{type(self).__name__}.update() called before set_target(entropy0)"
            )
        self.num_updates += 1
        if h < self.target - dead_band:
            return 1
        if h > self.target + dead_band:
            return -1
        return 0

    def state_dict(self) -> dict:
        return {self._knob: getattr(self, self._knob), "target": self.target,
                "num_updates": self.num_updates}

    def load_state_dict(self, d: dict) -> None:
        missing = {self._knob, "target"} - set(d)
        if missing:
            raise KeyError(f"{type(self).__name__} state_dict lacks {sorted(missing)}")
        setattr(self, self._knob, float(d[self._knob]))
        self.target = None if d["target"] is None else float(d["target"])
        self.num_updates = int(d.get("num_updates", 0))

    @property
    def at_bound(self) -> bool:
        """Whether the knob sits at a limit of its range (the controller cannot push further that way)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._knob}={getattr(self, self._knob)!r}, target={self.target!r})"


class ZetaController(_TargetController):
    """REPO's signed zeta, doubled / halved once per iteration (docs/method.md, "Controllers"):

    H < target (push up):   zeta > 0: zeta = min(2 zeta, zeta_max);  zeta = 0: zeta = zeta_min;
                            zeta < 0: zeta = zeta / 2, and if |zeta| < zeta_min: zeta = +zeta_min
    H > target (push down): the mirror image: zeta < 0: zeta = max(2 zeta, -zeta_max);
                            zeta = 0: -zeta_min; zeta > 0: zeta / 2, and if < zeta_min: -zeta_min
    H = target:             unchanged.
    So zeta always satisfies zeta = 0 or zeta_min <= |zeta| <= zeta_max.
    """

    _knob = "zeta"

    def __init__(self, zeta_init: float = 0.0, zeta_min: float = 1e-4, zeta_max: float = 0.05,
                 target_ratio: float = 1.0):
        super().__init__(target_ratio)
        zeta_init, zeta_min, zeta_max = (_finite("zeta_init", zeta_init),
                                         _finite("zeta_min", zeta_min), _finite("zeta_max", zeta_max))
        _require(zeta_min > 0, "zeta_min", zeta_min, "must be > 0")
        _require(zeta_max >= zeta_min, "zeta_max", zeta_max, f"must be >= zeta_min={zeta_min}")
        _require(zeta_init == 0 or zeta_min <= abs(zeta_init) <= zeta_max, "zeta_init", zeta_init,
                 f"must be 0 or have |zeta_init| in [zeta_min, zeta_max]=[{zeta_min}, {zeta_max}]")
        self.zeta, self.zeta_min, self.zeta_max = zeta_init, zeta_min, zeta_max

    @property
    def at_bound(self) -> bool:
        """|zeta| = zeta_max: the cap. (|zeta| = zeta_min is where the sign flips, part of the rule.)"""
        return abs(self.zeta) >= self.zeta_max

    def update(self, measured_entropy: float) -> float:
        """Apply the doubling / halving rule once; returns the new zeta."""
        d = self._direction(measured_entropy)
        z, lo, hi = self.zeta, self.zeta_min, self.zeta_max
        if d == 0:
            return z
        if d < 0:  # mirror image: run the "push up" rule on -zeta
            z = -z
        if z > 0:
            z = min(2.0 * z, hi)
        elif z == 0:
            z = lo
        else:
            z = z / 2.0
            if abs(z) < lo:
                z = lo
        self.zeta = z if d > 0 else -z
        return self.zeta


class ClipHighController(_TargetController):
    """ADAPO: move DAPO's eps_high both ways toward the target entropy (our choice of step rule;
    docs/method.md, "Controllers").

    H < target - dead_band: eps_high *= factor   (mode="additive": += step)
    H > target + dead_band: eps_high /= factor   (mode="additive": -= step)
    then clamp to [eps_min, eps_max]. dead_band is in nats. eps_low is not touched.
    """

    _knob = "eps_high"
    MODES = ("multiplicative", "additive")

    def __init__(self, eps_init: float = 0.28, eps_min: float = 0.1, eps_max: float = 1.0,
                 factor: float = 1.25, mode: str = "multiplicative", step: float = 0.05,
                 dead_band: float = 0.0, target_ratio: float = 1.0):
        super().__init__(target_ratio)
        eps_init, eps_min, eps_max = (_finite("eps_init", eps_init), _finite("eps_min", eps_min),
                                      _finite("eps_max", eps_max))
        factor, step, dead_band = (_finite("factor", factor), _finite("step", step),
                                   _finite("dead_band", dead_band))
        _require(eps_min > 0, "eps_min", eps_min, "must be > 0")
        _require(eps_max >= eps_min, "eps_max", eps_max, f"must be >= eps_min={eps_min}")
        _require(eps_min <= eps_init <= eps_max, "eps_init", eps_init,
                 f"must be in [eps_min, eps_max]=[{eps_min}, {eps_max}]")
        _require(mode in self.MODES, "mode", mode, f"allowed: {list(self.MODES)}")
        _require(factor > 1, "factor", factor, "must be > 1")
        _require(step > 0, "step", step, "must be > 0")
        _require(dead_band >= 0, "dead_band", dead_band, "must be >= 0 (nats)")
        self.eps_high, self.eps_min, self.eps_max = eps_init, eps_min, eps_max
        self.factor, self.mode, self.step, self.dead_band = factor, mode, step, dead_band

    @property
    def at_bound(self) -> bool:
        """eps_high = eps_min or eps_max."""
        return self.eps_high <= self.eps_min or self.eps_high >= self.eps_max

    def update(self, measured_entropy: float) -> float:
        """One step of eps_high toward the target; returns the new eps_high."""
        d = self._direction(measured_entropy, self.dead_band)
        e = self.eps_high
        if d != 0:
            if self.mode == "multiplicative":
                e = e * self.factor if d > 0 else e / self.factor
            else:
                e = e + d * self.step
            self.eps_high = min(max(e, self.eps_min), self.eps_max)
        return self.eps_high


class AdaptiveEntropyCoefController(_TargetController):
    """Skywork-OR1 adaptive entropy coefficient: c += delta while H < target, c -= delta while
    H > target (unchanged at equality), clamped to [coef_min, coef_max]. The bonus is applied
    only below target:
    update() returns `effective_coef` = c if the last measured H < target, else 0.
    Defaults (our choice): delta = 0.005 (Skywork-OR1's), coef_max = 0.1.
    """

    _knob = "coef"

    def __init__(self, coef_init: float = 0.0, delta: float = 0.005, coef_min: float = 0.0,
                 coef_max: float = 0.1, target_ratio: float = 1.0):
        super().__init__(target_ratio)
        coef_init, delta = _finite("coef_init", coef_init), _finite("delta", delta)
        coef_min, coef_max = _finite("coef_min", coef_min), _finite("coef_max", coef_max)
        _require(delta > 0, "delta", delta, "must be > 0")
        _require(coef_min >= 0, "coef_min", coef_min, "must be >= 0")
        _require(coef_max >= coef_min, "coef_max", coef_max, f"must be >= coef_min={coef_min}")
        _require(coef_min <= coef_init <= coef_max, "coef_init", coef_init,
                 f"must be in [coef_min, coef_max]=[{coef_min}, {coef_max}]")
        self.coef, self.delta, self.coef_min, self.coef_max = coef_init, delta, coef_min, coef_max
        self.below_target = False

    @property
    def at_bound(self) -> bool:
        """coef = coef_min or coef_max."""
        return self.coef <= self.coef_min or self.coef >= self.coef_max

    @property
    def effective_coef(self) -> float:
        """The coefficient to put in the loss: coef while entropy is below target, else 0."""
        return self.coef if self.below_target else 0.0

    def update(self, measured_entropy: float) -> float:
        """One step of coef; returns effective_coef."""
        d = self._direction(measured_entropy)
        self.below_target = d > 0
        if d != 0:
            self.coef = min(max(self.coef + d * self.delta, self.coef_min), self.coef_max)
        return self.effective_coef

    def state_dict(self) -> dict:
        return {**super().state_dict(), "below_target": self.below_target}

    def load_state_dict(self, d: dict) -> None:
        super().load_state_dict(d)
        self.below_target = bool(d.get("below_target", False))

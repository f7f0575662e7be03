"""ADAPO: DAPO's clip_ratio_high moved toward the target entropy (docs/method.md, "ADAPO").

eps_high follows rlx.control.ClipHighController once per iteration and replaces the configured
clip_ratio_high in the policy loss; clip_ratio_low stays fixed.
"""

from __future__ import annotations

from rlx.control import ClipHighController
from rlx.regulators.base import ControlledRegulator


class Adapo(ControlledRegulator):
    """Adaptive asymmetric clipping."""

    metric_name = "eps_high"

    def __init__(self, eps_init: float = 0.28, eps_min: float = 0.1, eps_max: float = 1.0,
                 mode: str = "multiplicative", factor: float = 1.25, step: float = 0.05,
                 dead_band: float = 0.0, target_ratio: float = 1.0):
        super().__init__(ClipHighController(eps_init=eps_init, eps_min=eps_min, eps_max=eps_max, factor=factor,
                                            mode=mode, step=step, dead_band=dead_band, target_ratio=target_ratio))

    def loss_overrides(self) -> dict:
        """clip_ratio_high = the controller's current eps_high."""
        return {"clip_ratio_high": self.controller.eps_high}

"""Adaptive entropy coefficient (Skywork-OR1; docs/method.md, "Adaptive entropy coefficient").

The entropy bonus coefficient follows rlx.control.AdaptiveEntropyCoefController once per
iteration and applies only while entropy is below target (0 otherwise).
"""

from __future__ import annotations

from rlx.control import AdaptiveEntropyCoefController
from rlx.regulators.base import ControlledRegulator


class AdaptiveEntropy(ControlledRegulator):
    """An entropy bonus whose coefficient is controlled toward the target entropy."""

    metric_name = "entropy_coef"

    def __init__(self, coef_init: float = 0.0, delta: float = 0.005, coef_min: float = 0.0,
                 coef_max: float = 0.1, target_ratio: float = 1.0):
        super().__init__(AdaptiveEntropyCoefController(coef_init=coef_init, delta=delta, coef_min=coef_min,
                                                       coef_max=coef_max, target_ratio=target_ratio))

    def loss_overrides(self) -> dict:
        """entropy_coeff = the controller's effective coefficient (0 while above target)."""
        return {"entropy_coeff": self.controller.effective_coef}

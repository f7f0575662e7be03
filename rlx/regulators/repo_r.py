"""REPO-R: regulate entropy through the advantage (docs/method.md, "REPO-R").

Every optimizer step shapes the advantage with the current (detached) log-probs:
    A' = repo_r(A, lp, zeta, variant)        (rlx.objectives.repo_r)
and zeta follows rlx.control.ZetaController once per iteration.
"""

from __future__ import annotations

import torch

from rlx.control import ZetaController
from rlx.objectives import repo_r
from rlx.objectives.repo import REPO_R_VARIANTS
from rlx.regulators.base import ControlledRegulator


class RepoR(ControlledRegulator):
    """REPO-R with zeta from the doubling / halving controller."""

    metric_name = "zeta"

    def __init__(self, variant: str = "signed", zeta_init: float = 0.0, zeta_min: float = 0.01,
                 zeta_max: float = 1.0, target_ratio: float = 1.0):
        if variant not in REPO_R_VARIANTS:
            raise ValueError(f"variant={variant!r}: allowed {list(REPO_R_VARIANTS)}")
        super().__init__(ZetaController(zeta_init=zeta_init, zeta_min=zeta_min, zeta_max=zeta_max,
                                        target_ratio=target_ratio))
        self.variant = variant

    def advantages(self, advantages: torch.Tensor, logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """repo_r(A, lp.detach(), zeta) on the response tokens, 0 elsewhere."""
        return repo_r(advantages, logprobs.detach(), self.controller.zeta, variant=self.variant) * mask

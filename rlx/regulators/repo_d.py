"""REPO-D: decorrelate advantage and surprisal (docs/method.md, "REPO-D").

Once per iteration, from the rollout policy's log-probs lp and exact entropy H:
    L = lp + H,  beta = zeta * max(0, -predicted_entropy_change(A, lp, H)),  A' = A - beta * L
(rlx.objectives.repo_d; one statistic of this rank's batch, so the minibatch split does not
matter), with zeta from rlx.control.ZetaController.
"""

from __future__ import annotations

import torch

from rlx.control import ZetaController
from rlx.objectives import repo_d
from rlx.regulators.base import ControlledRegulator


class RepoD(ControlledRegulator):
    """REPO-D with zeta from the doubling / halving controller."""

    metric_name = "zeta"
    needs_rollout_statistics = True

    def __init__(self, zeta_init: float = 0.0, zeta_min: float = 1e-3, zeta_max: float = 10.0,
                 target_ratio: float = 1.0):
        super().__init__(ZetaController(zeta_init=zeta_init, zeta_min=zeta_min, zeta_max=zeta_max,
                                        target_ratio=target_ratio))

    def rollout_advantages(self, token_advantages: torch.Tensor, old_logprobs: torch.Tensor,
                           entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A - beta * L on the response tokens, beta from the whole rollout batch."""
        regulated, _beta = repo_d(token_advantages, old_logprobs, entropy, mask, self.controller.zeta)
        return regulated.float() * mask

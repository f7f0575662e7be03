"""Entropy-based token masking (Wang et al. 2025, "Beyond the 80/20 rule"; TRL's
`top_entropy_quantile`): only the top-rho highest-entropy tokens of each rollout batch get
gradient (docs/method.md, "Top-entropy tokens").

    tau = quantile({H_t : t a response token of the batch}, 1 - rho)
    A'_t = A_t if H_t >= tau else 0

H_t is the rollout policy's exact entropy at token t, taken over the whole rollout batch (all
ranks), so the selection does not depend on how rows are split into steps. rho = 1 keeps every
token. A zero advantage removes the token's policy-gradient term; it still counts in the loss's
normaliser, as in TRL.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from rlx.regulators.base import Regulator


def entropy_threshold(entropy: torch.Tensor, mask: torch.Tensor, quantile: float) -> float:
    """The `quantile` of the entropies of the response tokens (gathered from every rank)."""
    values = entropy[mask.bool()].float().cpu()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, values)
        values = torch.cat(parts)
    return float(torch.quantile(values, quantile)) if len(values) else math.inf


class TopEntropyTokens(Regulator):
    """Train on the top_entropy_quantile share of tokens with the highest entropy."""

    needs_rollout_statistics = True

    def __init__(self, top_entropy_quantile: float = 0.2):
        try:
            rho = float(top_entropy_quantile)
        except (TypeError, ValueError):
            raise ValueError(f"top_entropy_quantile={top_entropy_quantile!r}: must be a number in (0, 1]") from None
        if not 0 < rho <= 1:
            raise ValueError(f"top_entropy_quantile={top_entropy_quantile!r}: must be in (0, 1] (1 keeps every token)")
        self.rho = rho
        self.threshold = math.nan
        self.kept_frac = math.nan

    def rollout_advantages(self, token_advantages: torch.Tensor, old_logprobs: torch.Tensor,
                           entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A_t where H_t >= tau, 0 elsewhere."""
        self.threshold = entropy_threshold(entropy, mask, 1.0 - self.rho)
        keep = (entropy >= self.threshold) & mask.bool()
        self.kept_frac = float(keep.sum() / mask.sum().clamp(min=1))
        return token_advantages * keep

    def update(self, entropy: float) -> dict[str, float]:
        """The iteration's threshold tau and the share of response tokens that kept their advantage."""
        return {"control/entropy_threshold": self.threshold, "train/high_entropy_token_frac": self.kept_frac}

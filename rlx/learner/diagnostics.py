"""Precision diagnostics (Theorem 3): clip decisions of the configured arithmetic against an fp32
recomputation of the same ratio, on a sample of the rollout batch (docs/method.md, "Precision")."""

from __future__ import annotations

import copy

import torch
from omegaconf import DictConfig

from rlx.learner.token_stats import ForwardSettings, response_token_stats
from rlx.precision import clip_flips
from rlx.rollout import RolloutBatch


def diagnostics_enabled(precision: DictConfig, policy, loss_name: str) -> bool:
    """The fp32 recomputation runs when asked for, unless everything already is fp32 or the loss
    has no ratio (reinforce)."""
    all_fp32 = (precision.trainer_precision == "32-true" and precision.logprob_dtype == "float32"
                and next(policy.parameters()).dtype == torch.float32)
    return bool(precision.diagnostics) and precision.diagnostics_sample > 0 and not all_fp32 and loss_name != "reinforce"


@torch.no_grad()
def fp32_logprobs(policy, batch: RolloutBatch, settings: ForwardSettings) -> torch.Tensor:
    """Log-probs of the current policy recomputed entirely in fp32 (an fp32 copy of its weights)."""
    shadow = copy.deepcopy(policy).float()
    device = next(policy.parameters()).device
    with torch.autocast(device_type=device.type, enabled=False):
        return response_token_stats(shadow, batch, settings.in_fp32(), with_entropy=False).logprobs


def mark_sample(rollout: RolloutBatch, policy, settings: ForwardSettings, size: int) -> None:
    """Choose the diagnostic rows (the first `size`) and keep their fp32 old log-probs."""
    rows = torch.arange(min(size, len(rollout.completions)))
    rollout.extras["diag_rows"] = rows
    rollout.extras["old_logprobs_fp32"] = fp32_logprobs(policy, rollout.select(rows), settings)


def clip_flip_metrics(rollout: RolloutBatch, policy, settings: ForwardSettings, logprobs_after: torch.Tensor,
                      clip_ratio_low: float, clip_ratio_high: float) -> dict[str, float]:
    """precision/clip_flip_frac, clip_flip_lowering_frac, clip_flips at the end of the update
    (rlx.precision.clip_flips on the diagnostic rows)."""
    extras = rollout.extras
    rows = extras["diag_rows"]
    sample = rollout.select(rows)
    ratio = torch.exp(logprobs_after[rows] - extras["old_logprobs"][rows])
    ratio_fp32 = torch.exp(fp32_logprobs(policy, sample, settings) - extras["old_logprobs_fp32"])
    flips = clip_flips(ratio, ratio_fp32, extras["token_advantages"][rows], extras["old_logprobs"][rows],
                       extras["entropy"][rows], sample.response_mask, clip_ratio_low, clip_ratio_high)
    return {f"precision/{k}": v for k, v in flips.items()}

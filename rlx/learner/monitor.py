"""The entropy monitor: the rollout policy's entropy, its change over the run, and Theorem 1's
predicted entropy change next to the measured one (docs/method.md, "Theorem 1")."""

from __future__ import annotations

import torch

from rlx import objectives as obj
from rlx.learner.distributed import global_mean
from rlx.metrics import pearson
from rlx.precision import logp_mismatch
from rlx.rollout import RolloutBatch


class EntropyMonitor:
    """Run-long entropy bookkeeping: entropy0 (first iteration), the cumulative entropy and the
    (predicted, measured) entropy change of every iteration."""

    def __init__(self, kl_loss_type: str):
        self.kl_loss_type = kl_loss_type
        self.entropy0: float | None = None
        self.entropy_cumulative = 0.0
        self.dynamics: list[tuple[float, float]] = []

    def rollout_metrics(self, rollout: RolloutBatch) -> dict[str, float]:
        """Entropy, KL to the reference and sampler/trainer mismatch of the rollout policy on its batch:
        train/entropy = token-mean exact entropy, train/entropy_change_pct = 100 (H - H0) / H0,
        train/entropy_sampled = token-mean of -log pi(y_t)."""
        mask, extras = rollout.response_mask, rollout.extras
        trainer_logprobs = extras["trainer_logprobs"]
        entropy = global_mean(extras["entropy"], mask)
        if self.entropy0 is None:
            self.entropy0 = entropy
        self.entropy_cumulative += entropy
        metrics = {
            "train/entropy": entropy,
            "train/entropy_sampled": global_mean(-trainer_logprobs, mask),
            "train/entropy_change_pct": 100.0 * (entropy - self.entropy0) / max(self.entropy0, 1e-12),
            "train/entropy_cumulative": self.entropy_cumulative,
        }
        if "ref_logprobs" in extras:
            kl = obj.kl_penalty(trainer_logprobs, extras["ref_logprobs"], self.kl_loss_type)
            metrics["train/kl_ref"] = global_mean(kl, mask)
        if "sampler_logprobs" in extras:
            mean, peak = logp_mismatch(extras["sampler_logprobs"], trainer_logprobs, mask)
            metrics["precision/logp_mismatch_mean"], metrics["precision/logp_mismatch_max"] = mean, peak
        return metrics

    def dynamics_metrics(self, rollout: RolloutBatch, entropy_after: torch.Tensor,
                         regulated_advantages: torch.Tensor) -> dict[str, float]:
        """Measured entropy change of the update on its own batch next to Theorem 1's prediction
        from the advantages the loss used: pred = -E[A (lp + H) pi] (predicted_entropy_change)."""
        mask, extras = rollout.response_mask, rollout.extras
        h_before, h_after = global_mean(extras["entropy"], mask), global_mean(entropy_after, mask)
        predicted = float(obj.predicted_entropy_change(regulated_advantages, extras["old_logprobs"],
                                                       extras["entropy"], mask))
        self.dynamics.append((predicted, h_after - h_before))
        return {"train/entropy_after": h_after, "train/entropy_meas_delta": h_after - h_before,
                "train/entropy_pred_delta": predicted}

    def summary(self) -> dict[str, float]:
        """summary/entropy_pred_meas_corr: Pearson correlation of predicted and measured changes."""
        if not self.dynamics:
            return {}
        predicted, measured = zip(*self.dynamics)
        return {"summary/entropy_pred_meas_corr": pearson(predicted, measured)}

    def state_dict(self) -> dict:
        return {"entropy0": self.entropy0, "entropy_cumulative": self.entropy_cumulative, "dynamics": self.dynamics}

    def load_state_dict(self, state: dict) -> None:
        self.entropy0 = state["entropy0"]
        self.entropy_cumulative = state["entropy_cumulative"]
        self.dynamics = [tuple(x) for x in state["dynamics"]]

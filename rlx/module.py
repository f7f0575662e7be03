"""The Lightning adapter: one `training_step` is one RL iteration of the learner core.

Lightning supplies the loop (one epoch per iteration), device placement, precision plugins,
strategies (DDP, FSDP), checkpoints and the MLflow logger; everything an iteration does is in
rlx.learner (rlx/learner/learner.py names its stages).
"""

from __future__ import annotations

import math

import lightning as L
import torch
from omegaconf import DictConfig

from rlx.learner import Learner, StepHooks
from rlx.learner.rng import restore_rng, rng_state
from rlx.tracking import flush_metrics


class RLModule(L.LightningModule):
    """Holds the policy and reference as submodules (so Lightning moves, converts, wraps and
    checkpoints them) and runs Learner.iteration with manual optimisation."""

    def __init__(self, policy, tokenizer, task, cfg: DictConfig, reference=None, rollout_engine=None):
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        hooks = StepHooks(backward=self.manual_backward, clip_grad_norm=self.clip_grad_norm)
        self.learner = Learner(policy, tokenizer, task, cfg, reference=reference, rollout_engine=rollout_engine,
                               hooks=hooks)
        self.policy = self.learner.policy
        self.reference = self.learner.reference
        self.last_metrics: dict[str, float] = {}

    def configure_optimizers(self):
        return self.learner.make_optimizer()

    def training_step(self, batch, batch_idx):
        iteration = self.current_epoch
        metrics = self.learner.iteration(iteration, self.optimizers())
        self.last_metrics = metrics
        self.log_metrics(metrics, step=iteration)
        if iteration == self.trainer.max_epochs - 1:  # the final policy is evaluated after the last update
            self.log_metrics(self.learner.evaluate_all_ranks(iteration), step=iteration + 1)

    def clip_grad_norm(self, params, max_norm: float) -> torch.Tensor:
        """Clip to max_norm and return the norm; under FSDP each rank holds a shard of the
        gradients, so the norm is the wrapped model's global one."""
        wrapped = self._trainer.strategy.model if self._trainer is not None else None
        if type(wrapped).__name__ == "FullyShardedDataParallel":
            return wrapped.clip_grad_norm_(max_norm)
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Finite metrics to the logger; after an evaluation, its samples as a TSV artifact."""
        clean = {k: v for k, v in metrics.items() if v is not None and math.isfinite(v)}
        if self.logger is None:
            return
        self.logger.log_metrics(clean, step=step)
        if any(k.endswith("pass_at_1") for k in clean) and self.learner.eval_generations:
            self.logger.experiment.log_text(self.logger.run_id, self.learner.eval_generations,
                                            f"generations/iteration_{step:05d}.tsv")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        flush_metrics(self.logger)  # a run resumed from this checkpoint finds every metric logged before it
        checkpoint["rlx"] = {**self.learner.state_dict(), "rng": rng_state(),
                             "mlflow_run_id": self.logger.run_id if self.logger is not None else None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["rlx"]
        self.learner.load_state_dict(state)
        restore_rng(state["rng"])

    def summary_metrics(self) -> dict[str, float]:
        return self.learner.summary_metrics()

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

from rlx.checkpoints import with_frozen, without_frozen
from rlx.learner import Learner, StepHooks
from rlx.learner.rng import restore_rng, rng_state
from rlx.tracking import flush_metrics, split_counters


class RLModule(L.LightningModule):
    """Holds the policy and reference as submodules (so Lightning moves, converts, wraps and
    checkpoints them) and runs Learner.iteration with manual optimisation."""

    def __init__(self, policy, tokenizer, task, cfg: DictConfig, reference=None, rollout_engine=None):
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        hooks = StepHooks(backward=self.manual_backward, clip_grad_norm=self.clip_grad_norm,
                          skipped_step=self.back_off_loss_scale)
        self.learner = Learner(policy, tokenizer, task, cfg, reference=reference, rollout_engine=rollout_engine,
                               hooks=hooks)
        self.policy = self.learner.policy
        self.tokenizer = tokenizer  # saved with the policy by rlx.export
        self.reference = self.learner.reference
        self.last_metrics: dict[str, float] = {}
        # (key, step) pairs a resumed run's MLflow run already holds (rlx.tracking.logged_metric_steps)
        self.already_logged: set[tuple[str, int]] = set()
        self.final_metrics: dict[str, float] = {}  # the evaluation after the last iteration
        self.counter_totals: dict[str, float] = {}  # train/optimizer_steps, ... summed over the run

    def configure_optimizers(self):
        return self.learner.make_optimizer()

    def training_step(self, batch, batch_idx):
        iteration = self.current_epoch
        metrics = self.learner.iteration(iteration, self.optimizers())
        self.last_metrics = metrics
        self.log_metrics(metrics, step=iteration)
        if iteration == self.trainer.max_epochs - 1:  # the final policy is evaluated after the last update
            self.final_metrics = self.learner.evaluate_all_ranks(iteration)
            self.log_metrics(self.final_metrics, step=iteration + 1)

    def clip_grad_norm(self, params, max_norm: float) -> torch.Tensor:
        """Clip to max_norm and return the norm; under FSDP each rank holds a shard of the
        gradients, so the norm is the wrapped model's global one. Under fp16 loss scaling the
        gradients are still multiplied by the scale S here (Lightning unscales them inside
        optimizer.step): the scaled norm is clipped at max_norm * S and returned divided by S."""
        scaler = self.loss_scaler()
        scale = float(scaler.get_scale()) if scaler is not None else 1.0
        wrapped = self._trainer.strategy.model if self._trainer is not None else None
        if type(wrapped).__name__ == "FullyShardedDataParallel":
            return wrapped.clip_grad_norm_(max_norm * scale) / scale
        return torch.nn.utils.clip_grad_norm_(params, max_norm * scale) / scale

    def loss_scaler(self):
        """Lightning's fp16 GradScaler when loss scaling is on, else None."""
        scaler = getattr(self._trainer.precision_plugin, "scaler", None) if self._trainer is not None else None
        return scaler if scaler is not None and scaler.is_enabled() else None

    def back_off_loss_scale(self) -> None:
        """A step skipped for an inf/NaN gradient: under fp16, scale *= backoff_factor (as
        GradScaler.update does after an overflow), so the next step can fit in fp16's range."""
        scaler = self.loss_scaler()
        if scaler is not None:
            scaler.update(scaler.get_scale() * scaler.get_backoff_factor())

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Finite metrics to the logger, each (key, step) once: a resumed run re-runs the iterations
        after its checkpoint but does not log again what the killed run logged of them (the
        values are the same: resuming is exact). After an evaluation, its samples as a TSV artifact."""
        finite = {k: v for k, v in metrics.items() if v is not None and math.isfinite(v)}
        finite = split_counters(finite, self.counter_totals)  # totals become tags at the end (rlx.tracking)
        clean = {k: v for k, v in finite.items() if (k, step) not in self.already_logged}
        if self.logger is None or not clean:
            return
        self.logger.log_metrics(clean, step=step)
        if any(k.endswith("pass_at_1") for k in clean) and self.learner.eval_generations:
            self.logger.experiment.log_text(self.logger.run_id, self.learner.eval_generations,
                                            f"generations/iteration_{step:05d}.tsv")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        flush_metrics(self.logger)  # a run resumed from this checkpoint finds every metric logged before it
        # frozen weights (LoRA base, reference copy) are rebuilt from the base policy, not saved (rlx.checkpoints)
        checkpoint["state_dict"], omitted = without_frozen(checkpoint["state_dict"], self)
        checkpoint["rlx"] = {**self.learner.state_dict(), "rng": rng_state(), "frozen_omitted": omitted,
                             "counter_totals": dict(self.counter_totals),
                             "mlflow_run_id": self.logger.run_id if self.logger is not None else None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["rlx"]
        checkpoint["state_dict"] = with_frozen(checkpoint["state_dict"], self, state.get("frozen_omitted", []))
        self.learner.load_state_dict(state)
        self.counter_totals = dict(state.get("counter_totals", {}))
        restore_rng(state["rng"])

    def summary_metrics(self) -> dict[str, float]:
        return self.learner.summary_metrics()

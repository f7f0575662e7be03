"""The update: ppo_epochs x minibatches optimizer steps on one rollout batch, each step
accumulated over micro-batches with the loss normalised by the minibatch's global token and
sequence counts, so neither the micro-batch split nor the number of ranks changes the gradient."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
from omegaconf import DictConfig

from rlx import objectives as obj
from rlx.learner import distributed as ddp
from rlx.learner.token_stats import ForwardSettings, batched_token_stats, micro_batches, response_token_stats
from rlx.regulators import Regulator
from rlx.rollout import RolloutBatch

# minibatch-mean names of update-time values that must not overwrite the rollout batch's metrics
RENAMED = {"entropy": "update_entropy", "kl_ref": "update_kl_ref"}
# loss metrics that are already a micro-batch's share of the minibatch value (normalised by the
# minibatch's global counts): summed over micro-batches; the others are means over the
# micro-batch's tokens and are weighted by its token count (rlx.objectives.policy_loss)
SHARE_METRICS = ("pg_loss", "entropy", "kl_ref")


def plain_backward(loss: torch.Tensor) -> None:
    loss.backward()


@dataclass
class StepHooks:
    """What the surrounding loop supplies: Lightning's manual_backward (precision plugins, DDP),
    the strategy's gradient clipping (FSDP shards) and what to do when a step is skipped for a
    non-finite gradient (fp16: back the loss scale off); plain torch by default."""

    backward: Callable[[torch.Tensor], None] = plain_backward
    clip_grad_norm: Callable[[list, float], torch.Tensor] = torch.nn.utils.clip_grad_norm_
    skipped_step: Callable[[], None] = lambda: None


def loss_config(alg: DictConfig, regulator: Regulator) -> dict:
    """The policy loss's keyword arguments: the shared verl keys this loss accepts, with the
    regulator's overrides (ADAPO's clip_ratio_high, an entropy coefficient), then
    algorithm.loss_kwargs as they are."""
    shared = dict(loss_agg_mode=alg.loss_agg_mode, clip_ratio_low=alg.clip_ratio_low,
                  clip_ratio_high=alg.clip_ratio_high, clip_ratio_c=alg.clip_ratio_c,
                  kl_loss_coef=alg.kl_loss_coef, kl_loss_type=alg.kl_loss_type,
                  entropy_coeff=float(alg.entropy_coeff))
    shared.update(regulator.loss_overrides())
    accepted = obj.policy_loss_keys(alg.loss)
    kwargs = {k: v for k, v in shared.items() if k in accepted}
    kwargs.update(alg.loss_kwargs or {})
    return kwargs


def correction_enabled(alg: DictConfig) -> bool:
    """Whether algorithm.rollout_correction weights (rollout_is) or drops (rollout_rs) tokens."""
    rc = alg.get("rollout_correction")
    return rc is not None and (rc.rollout_is is not None or rc.rollout_rs is not None)


def rollout_correction(rollout: RolloutBatch, alg: DictConfig) -> dict[str, float]:
    """The sampler/trainer mismatch correction of a rollout batch, from its old log-probs (the
    trainer's) and the sampler's (docs/method.md, "Rollout correction"): extras
    rollout_is_weights = min(pi_old / pi_sampler, rollout_is_threshold) at the rollout_is level,
    and rollout_rs_keep (0/1) = the tokens whose weight at the rollout_rs level lies in
    [rollout_rs_threshold_lower, rollout_rs_threshold]. Returns the rollout_corr/ metrics."""
    rc, extras, mask = alg.rollout_correction, rollout.extras, rollout.response_mask
    if "sampler_logprobs" not in extras:
        raise ValueError("algorithm.rollout_correction needs the sampler's log-probs; this rollout backend "
                         "returns none")
    old, sampler = extras["old_logprobs"], extras["sampler_logprobs"]
    metrics = {}
    if rc.rollout_is is not None:
        weights, is_metrics = obj.rollout_is_weights(old, sampler, mask, rc.rollout_is, rc.rollout_is_threshold)
        extras["rollout_is_weights"] = weights
        metrics.update(is_metrics)
    if rc.rollout_rs is not None:
        upper = rc.rollout_is_threshold if rc.rollout_rs_threshold is None else rc.rollout_rs_threshold
        keep, rs_metrics = obj.rollout_rs_mask(old, sampler, mask, rc.rollout_rs, upper, rc.rollout_rs_threshold_lower)
        extras["rollout_rs_keep"] = keep.to(mask.dtype)
        metrics.update(rs_metrics)
    return {f"rollout_corr/{k}": float(v) for k, v in metrics.items()}


def loss_mask(rollout: RolloutBatch, rows: torch.Tensor, width: int | None = None) -> torch.Tensor:
    """The response mask of `rows` (first `width` columns) the loss trains on: without the tokens
    the rollout correction dropped (extras rollout_rs_keep), when it drops any."""
    end = rollout.response_mask.shape[1] if width is None else width
    mask = rollout.response_mask[rows, :end]
    keep = rollout.extras.get("rollout_rs_keep")
    return mask if keep is None else mask * keep[rows, :end]


def trainable_rows(rollout: RolloutBatch, alg: DictConfig, device) -> tuple[torch.Tensor, dict[str, float]]:
    """Global ids of the rows the update trains on: every row, or with dynamic sampling the rows
    of groups whose rewards differ (logged as train/dropped_groups)."""
    size, rank = ddp.world()
    n_local = len(rollout.completions)
    keep = torch.zeros(n_local * size, dtype=torch.float64, device=device)
    keep[rank * n_local:(rank + 1) * n_local] = 1.0
    if alg.dynamic_sampling:
        keep[rank * n_local:(rank + 1) * n_local] = obj.dynamic_sampling_mask(
            rollout.extras["rewards"], alg.group_size).double().to(device)
    keep = ddp.all_reduce(keep).cpu() > 0.5
    metrics = {"train/dropped_groups": float((~keep).sum() / alg.group_size)} if alg.dynamic_sampling else {}
    return torch.arange(len(keep))[keep], metrics


class PolicyUpdate:
    """Optimizer steps on a rollout batch whose extras hold old_logprobs, entropy, token_advantages
    (and ref_logprobs when kl_loss_coef > 0)."""

    def __init__(self, policy, alg: DictConfig, regulator: Regulator, settings: ForwardSettings,
                 grad_clip: float, activation_offload: bool = False, hooks: StepHooks | None = None):
        self.policy, self.alg, self.regulator, self.settings = policy, alg, regulator, settings
        self.grad_clip, self.activation_offload = grad_clip, activation_offload
        self.hooks = hooks or StepHooks()

    def run(self, rollout: RolloutBatch, optimizer, generator: torch.Generator, fill_old: bool) -> dict[str, float]:
        """ppo_epochs passes over the trainable rows in a shuffled order, cut into num_minibatches
        steps. fill_old: the first step's forward writes the old log-probs and entropy.
        Returns the minibatch means, train/optimizer_steps, train/nonfinite_skips and
        precision/ratio_bias (first step's mean ratio - 1)."""
        alg, device = self.alg, rollout.response_mask.device
        rows, metrics = trainable_rows(rollout, alg, device)
        if correction_enabled(alg):
            if fill_old:
                raise ValueError("algorithm.rollout_correction needs the old log-probs before the update "
                                 "(no fused old log-probs)")
            metrics.update(rollout_correction(rollout, alg))
        sums: dict[str, float] = {}
        steps = skipped = 0
        for _epoch in range(alg.ppo_epochs):
            order = rows[torch.randperm(len(rows), generator=generator)] if len(rows) else rows
            for minibatch in order.tensor_split(alg.num_minibatches) if len(order) else []:
                if len(minibatch) == 0:
                    continue
                step_metrics = self.step(rollout, minibatch, optimizer, fill_old=fill_old)
                if fill_old and step_metrics is None:  # the fused pass stopped early: the policy did not move
                    self.fill_old_logprobs(rollout)
                fill_old = False
                if step_metrics is None:
                    skipped += 1
                    continue
                steps += 1
                if steps == 1 and "ratio_mean" in step_metrics:
                    metrics["precision/ratio_bias"] = step_metrics["ratio_mean"] - 1.0
                for key, value in step_metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
        metrics.update({f"train/{RENAMED.get(k, k)}": v / steps for k, v in sums.items()} if steps else {})
        metrics["train/optimizer_steps"] = float(steps)
        metrics["train/nonfinite_skips"] = float(skipped)
        return metrics

    @torch.no_grad()
    def fill_old_logprobs(self, rollout: RolloutBatch) -> None:
        """The old log-probs and entropy from a separate no-grad pass (the unfused path)."""
        before = batched_token_stats(self.policy, rollout, self.settings, with_entropy=True)
        rollout.extras["old_logprobs"].copy_(before.logprobs)
        rollout.extras["entropy"].copy_(before.entropy)

    def step(self, rollout: RolloutBatch, minibatch: torch.Tensor, optimizer,
             fill_old: bool = False) -> dict[str, float] | None:
        """One optimizer step over `minibatch` (global row ids; this rank trains on those it owns).
        Returns None (and skips the step) when the loss or gradient is not finite."""
        size = ddp.world()[0]
        local = ddp.local_rows(minibatch, len(rollout.completions))
        device = rollout.response_mask.device
        global_tokens = float(ddp.all_reduce(loss_mask(rollout, local).sum().double()))
        global_seqs = float(len(minibatch))
        if "rollout_rs_keep" in rollout.extras:  # rows whose every token was dropped leave the normaliser
            global_seqs = float(ddp.all_reduce(loss_mask(rollout, local).any(-1).sum().double()))
        kwargs = loss_config(self.alg, self.regulator)
        loss_entropy = kwargs.get("entropy_coeff", 0) > 0
        optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        micros = micro_batches(rollout, local, self.settings)
        if size > 1:  # every rank runs as many backward passes (each one is a collective under DDP)
            count = ddp.all_reduce_max(torch.tensor(len(micros), device=device))
            micros += [None] * (int(count) - len(micros))
        for item in micros:
            scale = 1.0
            if item is None:  # no rows left on this rank: a zero-weighted pass keeps the ranks in step
                item, scale = (torch.zeros(1, dtype=torch.long), 1), 0.0
            part_metrics = self.micro_step(rollout, item, scale, fill_old, loss_entropy, kwargs,
                                           global_tokens, global_seqs)
            if part_metrics is None:
                optimizer.zero_grad(set_to_none=True)
                return None
            for key, value in part_metrics.items():
                totals[key] = totals.get(key, 0.0) + value
        totals = ddp.sum_over_ranks(totals, device)  # sums of per-rank parts -> the minibatch's global values
        grad_norm = self.hooks.clip_grad_norm([p for p in self.policy.parameters() if p.requires_grad],
                                              self.grad_clip)
        if not torch.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)
            self.hooks.skipped_step()
            return None
        totals["grad_norm"] = float(grad_norm)
        optimizer.step()
        return totals

    def micro_step(self, rollout: RolloutBatch, item: tuple[torch.Tensor, int], scale: float, fill_old: bool,
                   loss_entropy: bool, kwargs: dict, global_tokens: float, global_seqs: float) -> dict | None:
        """Forward, loss and backward of one micro-batch; its token-weighted metrics (None when the
        loss is not finite on some rank)."""
        micro, width = item
        part = rollout.select(micro, width)
        mask, extras = loss_mask(rollout, micro, width), rollout.extras
        offload = torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available()) \
            if self.activation_offload else nullcontext()
        with offload:
            current = response_token_stats(self.policy, part, self.settings,
                                           with_entropy=fill_old or loss_entropy)
            if fill_old and scale:  # this step starts at the rollout policy: old log-probs = current ones
                extras["old_logprobs"][micro, :width] = current.logprobs.detach()
                extras["entropy"][micro, :width] = current.entropy.detach()
            extra = {"entropy": current.entropy} if loss_entropy else {}
            if self.alg.kl_loss_coef > 0:
                extra["ref_logprobs"] = extras["ref_logprobs"][micro, :width]
            if "rollout_is_weights" in extras:
                extra["rollout_is_weights"] = extras["rollout_is_weights"][micro, :width]
            advantages = self.regulator.advantages(extras["token_advantages"][micro, :width], current.logprobs, mask)
            loss, loss_metrics = obj.policy_loss(
                self.alg.loss, current.logprobs, extras["old_logprobs"][micro, :width], advantages, mask,
                global_tokens=global_tokens, global_seqs=global_seqs,
                max_response_length=rollout.response_mask.shape[1], **extra, **kwargs)
            loss = loss * scale
            finite = ddp.all_reduce_min(torch.isfinite(loss.detach()).double())
            if not finite:
                return None
            # DDP / FSDP average gradients over ranks; the loss is already normalised by global
            # counts, so scaling by the world size makes the synced gradient the global one.
            size = ddp.world()[0]
            self.hooks.backward(loss * size if size > 1 else loss)
        weight = scale * float(mask.sum()) / max(global_tokens, 1.0)  # per-token metrics, token-weighted
        totals = {"loss": float(loss.detach())}
        for key, value in loss_metrics.items():
            totals[key] = (scale if key in SHARE_METRICS else weight) * float(value)
        return totals

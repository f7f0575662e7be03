"""The learner core: one RL iteration as named stages, with no Lightning in sight.

    evaluate (every eval_every iterations)
    sample prompts -> rollout -> score -> advantages -> rollout statistics      (collect)
    regulator.rollout_advantages -> update: epochs x minibatches x micro-batches (train_on)
    -> regulator.update(rollout entropy) (controllers) -> entropy monitor -> metrics -> guards

Runnable from a test or a benchmark with a plain optimizer (Learner.iteration); rlx.module wires
it into Lightning's loop, strategies, checkpoints and logger.
"""

from __future__ import annotations

import copy
import time

import torch
from omegaconf import DictConfig

from rlx import objectives as obj
from rlx.evaluation import evaluate
from rlx.learner import diagnostics
from rlx.learner import distributed as ddp
from rlx.learner.distributed import global_mean
from rlx.learner.guards import Guards
from rlx.learner.monitor import EntropyMonitor
from rlx.learner.sampling import PolicySampler, sample_prompts
from rlx.learner.token_stats import ForwardSettings, batched_token_stats
from rlx.learner.update import PolicyUpdate, StepHooks, correction_enabled, loss_config
from rlx.models import is_lora_model
from rlx.regulators import Regulator, build_regulator
from rlx.rollout import RolloutBatch
from rlx.tasks.base import RewardStats, is_multi_turn


def reference_policy(policy, reference, cfg: DictConfig) -> tuple[torch.nn.Module | None, bool]:
    """(frozen reference model or None, whether the reference is the LoRA base with adapters off).
    A reference exists when the loss has a KL term or monitor.kl_ref logs the KL."""
    needed = cfg.algorithm.kl_loss_coef > 0 or cfg.monitor.kl_ref
    is_base = reference is None and needed and is_lora_model(policy)  # no second copy under LoRA
    if reference is None and needed and not is_base:
        reference = copy.deepcopy(policy)
    if reference is not None:
        reference.requires_grad_(False).eval()
    return reference, is_base


def vocab_size(policy) -> int:
    """Rows of the policy's output layer (the size of the distribution it samples from)."""
    head = policy.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else int(policy.config.vocab_size)


class Learner:
    """Policy, reference, regulator and monitor of one run, and the stages of its iterations."""

    def __init__(self, policy, tokenizer, task, cfg: DictConfig, reference=None, rollout_engine=None,
                 hooks: StepHooks | None = None, regulator: Regulator | None = None):
        self.policy = policy.train()  # from_pretrained returns eval mode
        self.task, self.cfg, self.alg = task, cfg, cfg.algorithm
        self.reference, self.reference_is_base = reference_policy(policy, reference, cfg)
        self.regulator = regulator if regulator is not None else build_regulator(cfg.algorithm.regulator)
        self.monitor = EntropyMonitor(cfg.algorithm.kl_loss_type)
        self.settings = ForwardSettings.from_config(cfg)
        self.sampler = PolicySampler(policy, tokenizer, task, cfg, rollout_engine)
        self.update = PolicyUpdate(policy, cfg.algorithm, self.regulator, self.settings, cfg.optim.grad_clip,
                                   cfg.trainer.activation_offload, hooks)
        self.train_prompts = task.train_prompts()
        self.guards = Guards(vocab_size(policy), cfg.task.prompts_per_step * cfg.algorithm.group_size,
                             reward_patience=cfg.guard.reward_failure_patience,
                             divergence_patience=cfg.guard.divergence_patience,
                             nonfinite_patience=cfg.guard.nonfinite_patience)
        self.eval_generations: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    def make_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters (only the adapters under LoRA)."""
        o = self.cfg.optim
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))

    # ----------------------------------------------------------------- one iteration
    def iteration(self, iteration: int, optimizer) -> dict[str, float]:
        """Evaluate when due, collect a rollout batch, train on it; the metrics (mean over ranks).
        Raises RunStopped when a guard finds the run broken (rlx.learner.guards)."""
        metrics: dict[str, float] = {}
        t_start = time.perf_counter()
        if self.evaluation_due(iteration):
            metrics.update(self.evaluate(iteration))
        rollout, rollout_metrics = self.collect(iteration)
        metrics.update(rollout_metrics)
        metrics.update(self.train_on(rollout, optimizer, iteration))
        metrics["time/iteration_s"] = time.perf_counter() - t_start
        metrics = ddp.mean_over_ranks(metrics, self.device)
        self.guards.check(metrics, iteration)
        return metrics

    def evaluation_due(self, iteration: int) -> bool:
        """At the first iteration and every eval_every iterations (the last is evaluated after it)."""
        return bool(self.cfg.eval_every and iteration % self.cfg.eval_every == 0) or iteration == 0

    @torch.no_grad()
    def collect(self, iteration: int) -> tuple[RolloutBatch, dict[str, float]]:
        """Prompts -> rollout -> rewards -> advantages -> the rollout policy's token statistics."""
        prompts = self.prompts_for(iteration)
        if ddp.world()[0] > 1:  # each rank samples its share with its own stream
            torch.manual_seed((self.cfg.seed * 1_000_003 + iteration) * 1009 + ddp.world()[1])
        t0 = time.perf_counter()
        prec = self.cfg.precision
        rollout = self.sampler.generate(prompts, self.alg.group_size,
                                        return_logprobs=bool(prec.diagnostics) or prec.old_logprobs == "sampler"
                                        or correction_enabled(self.alg))
        t_rollout = time.perf_counter() - t0
        stats = RewardStats()
        rewards = torch.tensor(self.sampler.score(prompts, rollout, stats), dtype=torch.float32)
        rollout.extras["rewards"] = rewards
        advantages = self.advantages(rewards)
        rollout.extras["advantages"] = advantages
        t0 = time.perf_counter()
        self.rollout_statistics(rollout)
        t_logprob = time.perf_counter() - t0
        metrics = self.rollout_metrics(rollout, rewards, advantages, stats, t_rollout, t_logprob)
        if not self.fused_old_logprobs():
            metrics.update(self.policy_statistics(rollout))
        return rollout, metrics

    def train_on(self, rollout: RolloutBatch, optimizer, iteration: int) -> dict[str, float]:
        """Regulated token advantages -> optimizer steps -> regulator.update(rollout entropy) -> monitor."""
        t0 = time.perf_counter()
        mask, extras = rollout.response_mask, rollout.extras
        extras["token_advantages"] = self.regulator.rollout_advantages(
            extras["advantages"].to(mask.device)[:, None] * mask, extras["old_logprobs"], extras["entropy"], mask)
        generator = torch.Generator().manual_seed(self.cfg.seed * 7919 + iteration)
        metrics = self.update.run(rollout, optimizer, generator, fill_old=self.fused_old_logprobs())
        metrics["time/update_s"] = time.perf_counter() - t0
        if self.fused_old_logprobs():  # the rollout policy's statistics came from the update's forward pass
            metrics.update(self.policy_statistics(rollout))
        # the controllers compare the rollout policy's own entropy (pre-update, as the target) with the target
        metrics.update(self.regulator.update(global_mean(extras["entropy"], mask)))
        metrics.update(self.after_update(rollout))
        return metrics

    # ----------------------------------------------------------------- stages
    def prompts_for(self, iteration: int) -> list:
        """This iteration's prompts; with several ranks, this rank's share (every size-th prompt)."""
        prompts = sample_prompts(self.train_prompts, self.cfg.task.prompts_per_step, self.cfg.seed, iteration)
        size, rank = ddp.world()
        if size > 1:
            if len(prompts) % size:
                raise ValueError(f"task.prompts_per_step={len(prompts)} must be divisible by the number of "
                                 f"ranks ({size}) so every rank holds whole groups")
            prompts = prompts[rank::size]
        return prompts

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """[N] sequence advantages of the configured estimator (rlx.objectives.compute_advantages)."""
        alg = self.alg
        options = {k: v for k, v in {"scale": alg.adv_scale}.items() if k in obj.advantage_keys(alg.advantage)}
        return obj.compute_advantages(alg.advantage, rewards, alg.group_size, **options)

    def fused_old_logprobs(self) -> bool:
        """Whether the old log-probs and entropy come from the update's first forward pass instead of
        a separate no-grad pass: with one minibatch per epoch (and no dynamic sampling) the first
        optimizer step covers every row and starts at the rollout policy. Off when something needs
        them before the update (the regulator, the sampler's log-probs, the rollout correction, the
        fp32 diagnostics) and with trainer.fuse_old_logprobs=false. The training pass forms
        log-probs with the preset's arithmetic, so every precision preset can fuse."""
        alg, prec = self.alg, self.cfg.precision
        return bool(self.cfg.trainer.fuse_old_logprobs and alg.num_minibatches == 1 and not alg.dynamic_sampling
                    and not self.regulator.needs_rollout_statistics and prec.old_logprobs == "trainer"
                    and not correction_enabled(alg)
                    and not self.diagnostics_enabled() and not is_multi_turn(self.task))

    def diagnostics_enabled(self) -> bool:
        return diagnostics.diagnostics_enabled(self.cfg.precision, self.policy, self.alg.loss)

    def rollout_statistics(self, rollout: RolloutBatch) -> None:
        """extras: old_logprobs, entropy and trainer_logprobs of the rollout policy (zeros to be
        filled by the first update step when fused), the diagnostic sample, ref_logprobs."""
        extras, prec = rollout.extras, self.cfg.precision
        use_sampler = prec.old_logprobs == "sampler"
        if use_sampler and "sampler_logprobs" not in extras:
            raise ValueError("precision.old_logprobs='sampler': this rollout backend returns no sampler log-probs")
        if self.fused_old_logprobs():
            zeros = torch.zeros(rollout.response_mask.shape, dtype=torch.float32, device=rollout.response_mask.device)
            extras["old_logprobs"], extras["entropy"] = zeros, zeros.clone()
            extras["trainer_logprobs"] = extras["old_logprobs"]
        else:
            before = batched_token_stats(self.policy, rollout, self.settings, with_entropy=True)
            extras["trainer_logprobs"] = before.logprobs
            extras["old_logprobs"] = extras["sampler_logprobs"] if use_sampler else before.logprobs
            extras["entropy"] = before.entropy
        if self.diagnostics_enabled():
            diagnostics.mark_sample(rollout, self.policy, self.settings, self.cfg.precision.diagnostics_sample)
        if self.reference is not None or self.reference_is_base:
            extras["ref_logprobs"] = self.reference_logprobs(rollout)

    @torch.no_grad()
    def reference_logprobs(self, rollout: RolloutBatch) -> torch.Tensor:
        """Log-probs of the reference policy: the LoRA base with adapters disabled, else the frozen copy."""
        if self.reference_is_base:
            with self.policy.disable_adapter():
                return batched_token_stats(self.policy, rollout, self.settings, False).logprobs
        return batched_token_stats(self.reference, rollout, self.settings, False).logprobs

    def rollout_metrics(self, rollout: RolloutBatch, rewards, advantages, stats: RewardStats, t_rollout: float,
                        t_logprob: float) -> dict[str, float]:
        """Rewards, advantages, lengths and timings of the rollout batch."""
        n_tokens = float(ddp.all_reduce(rollout.response_mask.sum().double()))  # over every rank's shard
        metrics = {
            "train/reward_mean": float(rewards.mean()),
            "train/reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
            "train/reward_errors": float(stats.errors),
            "train/advantage_abs_mean": float(advantages.abs().mean()),
            "train/response_length": n_tokens / (len(rewards) * ddp.world()[0]),
            "train/truncated_frac": float(rollout.truncated.float().mean()),
            "time/rollout_s": t_rollout,
            "time/logprob_s": t_logprob,
            "perf/tokens_per_s": n_tokens / max(t_rollout, 1e-9),
        }
        metrics.update({f"train/{k}": v for k, v in rollout.extras.get("episode_stats", {}).items()})
        return metrics

    def policy_statistics(self, rollout: RolloutBatch) -> dict[str, float]:
        """The monitor's rollout-policy metrics; the first call starts the regulator (its target)."""
        first = self.monitor.entropy0 is None
        metrics = self.monitor.rollout_metrics(rollout)
        if first:
            self.regulator.start(self.monitor.entropy0)
        return metrics

    @torch.no_grad()
    def after_update(self, rollout: RolloutBatch) -> dict[str, float]:
        """The post-update entropy of the batch (monitor.entropy_dynamics): Theorem 1's prediction
        next to the measured change, and the precision clip flips."""
        if not self.cfg.monitor.entropy_dynamics:
            return {}
        t0 = time.perf_counter()
        mask, extras = rollout.response_mask, rollout.extras
        after = batched_token_stats(self.policy, rollout, self.settings, with_entropy=True)
        regulated = self.regulator.advantages(extras["token_advantages"], extras["old_logprobs"], mask)
        metrics = self.monitor.dynamics_metrics(rollout, after.entropy, regulated)
        if "diag_rows" in extras:
            kwargs = loss_config(self.alg, self.regulator)
            metrics.update(diagnostics.clip_flip_metrics(
                rollout, self.policy, self.settings, after.logprobs,
                kwargs.get("clip_ratio_low", self.alg.clip_ratio_low),
                kwargs.get("clip_ratio_high", self.alg.clip_ratio_high)))
        metrics["time/monitor_s"] = time.perf_counter() - t0
        return metrics

    # ----------------------------------------------------------------- evaluation and state
    @torch.no_grad()
    def evaluate(self, iteration: int) -> dict[str, float]:
        """rlx.evaluation.evaluate on its own seeded RNG stream, so evaluating never changes the
        training trajectory (an evaluated and an unevaluated or resumed run train identically)."""
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed * 31 + iteration)
            metrics, self.eval_generations = evaluate(self.sampler, self.task, self.cfg.eval,
                                                      self.cfg.logger.log_generations)
        metrics["time/eval_s"] = time.perf_counter() - t0
        return metrics

    def evaluate_all_ranks(self, iteration: int) -> dict[str, float]:
        """evaluate(), averaged over ranks."""
        return ddp.mean_over_ranks(self.evaluate(iteration), self.device)

    def summary_metrics(self) -> dict[str, float]:
        """End-of-run summaries (the Theorem 1 prediction/measurement correlation)."""
        return self.monitor.summary()

    def state_dict(self) -> dict:
        """Regulator, monitor and guard state (random streams: rlx.learner.rng)."""
        return {"regulator": self.regulator.state_dict(), "monitor": self.monitor.state_dict(),
                "guards": self.guards.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.regulator.load_state_dict(state["regulator"])
        self.monitor.load_state_dict(state["monitor"])
        self.guards.load_state_dict(state["guards"])

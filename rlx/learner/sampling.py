"""Rollout: prompts for an iteration, n samples per prompt from the policy, one reward per sample.

The same PolicySampler serves training and evaluation (rlx-eval included), so both use the
configured sampler, its dtype (precision.sampler_dtype), vLLM and multi-turn episodes alike.
"""

from __future__ import annotations

import copy
import random

import torch
from omegaconf import DictConfig

from rlx.models import prompt_formatter
from rlx.precision import dtype_of
from rlx.rollout import RolloutBatch, sampler_fn
from rlx.rollout.multiturn import run_episodes
from rlx.tasks.base import RewardStats, is_multi_turn, safe_rewards


def sample_prompts(train_prompts: list, count: int, seed: int, iteration: int) -> list:
    """`count` prompts without replacement (with replacement beyond the task's size), seeded by
    (seed, iteration) so a resumed run sees the same prompts as an uninterrupted one."""
    rng = random.Random(seed * 1_000_003 + iteration)
    chosen = rng.sample(train_prompts, min(count, len(train_prompts)))
    while len(chosen) < count:
        chosen.append(rng.choice(train_prompts))
    return chosen


class PolicySampler:
    """n samples per prompt from the policy: multi-turn episodes for a multi-turn task, else the
    rollout engine (vLLM) when there is one, else rlx's sampler / HF generate (rollout.sampler)
    on the policy in precision.sampler_dtype. The sampler's log-probs are formed like the
    trainer's: log-softmax in precision.logprob_dtype, and with precision.upcast_head rlx's
    sampler takes its next-token logits from the LM head in fp32 (HF generate uses the model's
    own head)."""

    def __init__(self, policy, tokenizer, task, cfg: DictConfig, engine=None):
        self.policy, self.tokenizer, self.task, self.engine = policy, tokenizer, task, engine
        self.rollout_cfg = cfg.rollout
        self.reward_timeout_s = cfg.task.get("reward_timeout_s")
        self.sampler_dtype = dtype_of(cfg.precision.sampler_dtype, "precision.sampler_dtype")
        self.arithmetic = {"logprob_dtype": dtype_of(cfg.precision.logprob_dtype, "precision.logprob_dtype")}
        if cfg.rollout.sampler == "rlx":
            self.arithmetic["upcast_head"] = bool(cfg.precision.upcast_head)
        self.format_prompt = prompt_formatter(tokenizer, cfg.model)  # chat template when there is one
        self._copy: list | None = None  # outside any module tree: never checkpointed or converted

    def generate(self, prompts, n: int, **options) -> RolloutBatch:
        """n samples per prompt, groups contiguous; options go to the backend (e.g. return_logprobs)."""
        ro = self.rollout_cfg
        if is_multi_turn(self.task):  # policy turns alternate with environment observations
            return run_episodes(self.policy, self.tokenizer, self.task, prompts, n, ro.max_new_tokens,
                                ro.temperature, ro.top_k, ro.top_p)
        texts = [self.format_prompt(p.text) for p in prompts]
        if self.engine is not None:
            return self.engine.generate(self.policy, self.tokenizer, texts, n, ro.max_new_tokens,
                                        ro.temperature, ro.top_k, ro.top_p, **options)
        device = next(self.policy.parameters()).device
        with torch.autocast(device_type=device.type, enabled=False):  # the sampler runs in its own dtype
            return sampler_fn(ro.sampler)(self.sampling_policy(), self.tokenizer, texts, n, ro.max_new_tokens,
                                          ro.temperature, ro.top_k, ro.top_p, **self.arithmetic, **options)

    def sampling_policy(self):
        """The policy in sampler_dtype: the policy itself when its weights have that dtype, else a
        copy whose weights are re-synced from the policy at every call."""
        if next(self.policy.parameters()).dtype == self.sampler_dtype:
            return self.policy
        if self._copy is None:
            self._copy = [copy.deepcopy(self.policy).to(self.sampler_dtype).eval().requires_grad_(False)]
        sampler = self._copy[0]
        with torch.no_grad():
            for target, source in zip(sampler.parameters(), self.policy.parameters()):
                target.copy_(source)
        return sampler

    def score(self, prompts, rollout: RolloutBatch, stats: RewardStats) -> list[float]:
        """One reward per row: the task's reward of each completion, or each episode's return for a
        multi-turn task (whose environment failures the rollout driver counted)."""
        if is_multi_turn(self.task):
            stats.errors += int(rollout.extras["episode_stats"]["env_errors"])
            return rollout.extras["episode_rewards"]
        samples = [prompts[i] for i in rollout.prompt_index.tolist()]
        return safe_rewards(self.task, samples, rollout.completions, stats, self.reward_timeout_s)

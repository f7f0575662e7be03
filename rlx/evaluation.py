"""Evaluation, one module for training and `rlx-eval`: pass@k, distinct correct answers, reward
(and optionally exact entropy) on each of the task's evaluation splits.

Per split, with n samples per prompt (prompts contiguous) and c correct among a prompt's n:
    <split>/pass_at_k/<kk>     mean over prompts of 1 - C(n - c, k) / C(n, k)   (unbiased; k >= 2,
                               zero-padded: pass_at_k/04, pass_at_k/16)
    <split>/pass_at_1          fraction of correct samples (= pass@1)
    <split>/distinct_correct   mean over prompts of the number of different correct answers
    <split>/reward_mean        mean reward
    <split>/entropy            token-mean exact fp32 entropy of the policy on its samples (with_entropy)
A sample is correct when its reward reaches SUCCESS_THRESHOLD.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from rlx.metrics import distinct_correct, pass_at_k, pass_at_k_name
from rlx.tasks.base import RewardStats

SUCCESS_THRESHOLD = 1.0 - 1e-6  # a reward of 1 (up to rounding) is a correct sample


def split_metrics(rewards: Sequence[float], completions: Sequence[str], n: int, ks: Sequence[int],
                  answer_key: Callable[[str], str]) -> dict[str, float]:
    """pass_at_k/<k>, pass_at_1, distinct_correct and reward_mean of one split (module docstring)."""
    if len(rewards) % n or len(rewards) != len(completions):
        raise ValueError(f"{len(rewards)} rewards / {len(completions)} completions are not n={n} per prompt")
    correct = [r >= SUCCESS_THRESHOLD for r in rewards]
    prompts = len(rewards) // n
    out: dict[str, float] = {}
    for k in ks:
        if k == 1:  # pass@1 is pass_at_1 below: the same number, one name
            continue
        out[pass_at_k_name(k)] = float(np.mean([pass_at_k(n, sum(correct[p * n:(p + 1) * n]), k)
                                               for p in range(prompts)]))
    out["pass_at_1"] = float(np.mean(correct))
    out["distinct_correct"] = float(np.mean([
        distinct_correct(completions[p * n:(p + 1) * n], correct[p * n:(p + 1) * n], answer_key)
        for p in range(prompts)]))
    out["reward_mean"] = float(np.mean(rewards))
    return out


@torch.no_grad()
def sample_split(sampler, prompts, n: int, batch_size: int):
    """(rollout batches, rewards, completions): n samples per prompt, batch_size rows at a time."""
    chunk = max(1, batch_size // n)
    batches, rewards, completions = [], [], []
    for start in range(0, len(prompts), chunk):
        part = prompts[start:start + chunk]
        batch = sampler.generate(part, n)
        rewards += sampler.score(part, batch, RewardStats())
        batches.append(batch)
        completions += batch.completions
    return batches, rewards, completions


@torch.no_grad()
def policy_entropy(policy, batches, settings) -> float:
    """Token-mean exact entropy (fp32) of the policy over the completion tokens of the batches."""
    from rlx.learner.token_stats import batched_token_stats

    total = count = 0.0
    for batch in batches:
        stats = batched_token_stats(policy, batch, settings, with_entropy=True)
        total += float((stats.entropy * batch.response_mask).sum())
        count += float(batch.response_mask.sum())
    return total / max(count, 1.0)


def generation_lines(split: str, prompts, completions: Sequence[str], rewards: Sequence[float], n: int,
                     budget: int) -> list[str]:
    """TSV rows (split, prompt, completion, reward): the first budget / #prompts samples of each prompt."""
    shown = max(1, budget // max(1, len(prompts)))
    return [f"{split}\t{prompts[p].text}\t{completions[row]!r}\t{rewards[row]:.2f}"
            for p in range(len(prompts)) for row in range(p * n, p * n + min(n, shown))]


@torch.no_grad()
def evaluate(sampler, task, eval_cfg, log_generations: int, entropy_settings=None) -> tuple[dict[str, float], str]:
    """Metrics `<split>/...` over every evaluation split of the task and the samples as TSV text.
    sampler: a rlx.learner.sampling.PolicySampler; entropy_settings: ForwardSettings to also
    measure <split>/entropy (None: not measured)."""
    n = eval_cfg.samples_per_prompt
    metrics: dict[str, float] = {}
    lines = []
    for split, prompts in task.eval_prompts().items():
        batches, rewards, completions = sample_split(sampler, prompts, n, eval_cfg.batch_size)
        for key, value in split_metrics(rewards, completions, n, list(eval_cfg.k), task.answer_key).items():
            metrics[f"{split}/{key}"] = value
        if entropy_settings is not None:
            metrics[f"{split}/entropy"] = policy_entropy(sampler.policy, batches, entropy_settings)
        lines += generation_lines(split, prompts, completions, rewards, n, log_generations)
    return metrics, "split\tprompt\tcompletion\treward\n" + "\n".join(lines) + "\n"

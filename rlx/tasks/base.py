"""The task interface: what the trainer needs from an environment.

A single-turn task maps a prompt to a completion and scores it with a program. The trainer
only ever sees `Prompt` records and calls `score`, so a task can be swapped by config.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompt:
    """One prompt of a task: the text shown to the policy plus whatever the reward needs."""

    text: str
    info: dict[str, Any] = field(default_factory=dict)


class SingleTurnTask:
    """Base class of single-turn tasks: prompt -> completion -> reward in [0, 1] and info.

    Subclasses implement `reward`, `train_prompts`, `eval_prompts`, `alphabet` and, when the
    task provides its own base policy, `warmstart_texts`.
    """

    name: str = "task"

    def reward(self, prompt: Prompt, completion: str) -> float:
        raise NotImplementedError

    def train_prompts(self) -> list[Prompt]:
        raise NotImplementedError

    def eval_prompts(self) -> dict[str, list[Prompt]]:
        """Named evaluation splits, e.g. {"eval": held-out prompts, "eval_train": training prompts}."""
        raise NotImplementedError

    def alphabet(self) -> str:
        """Every character prompts and completions may contain (for a character tokenizer)."""
        raise NotImplementedError

    def warmstart_texts(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        """n (prompt, completion) pairs for the supervised warm-start of the base policy."""
        raise NotImplementedError(f"task {self.name!r} has no warm-start data")

    def answer_key(self, completion: str) -> str:
        """The canonical form used to count distinct answers (default: the stripped text)."""
        return completion.strip()


@dataclass
class RewardStats:
    """Counts of reward-function failures, reset once per iteration by the trainer."""

    errors: int = 0
    first_error: str | None = None


def safe_rewards(
    task: SingleTurnTask, prompts: Sequence[Prompt], completions: Sequence[str], stats: RewardStats
) -> list[float]:
    """Score each (prompt, completion); a reward that raises or is not a finite number scores 0.

    Every failure is counted in `stats` (and the first one logged once) so a broken reward
    function shows up in the metrics instead of killing a long run.
    """
    rewards = []
    for prompt, completion in zip(prompts, completions, strict=True):
        try:
            value = float(task.reward(prompt, completion))
            if not math.isfinite(value):
                raise ValueError(f"reward is not finite: {value}")
        except Exception as exc:  # noqa: BLE001 - any user reward failure must not crash the run
            value = 0.0
            stats.errors += 1
            if stats.first_error is None:
                stats.first_error = f"{type(exc).__name__}: {exc}"
                log.warning("reward function of task %r failed (sample scored 0): %s", task.name, stats.first_error)
        rewards.append(value)
    return rewards

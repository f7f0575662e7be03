"""The task interface: what the trainer needs from an environment.

Two shapes, both selected by config (`_target_`):
- `SingleTurnTask`: prompt -> completion -> reward (and info). The trainer sees `Prompt`
  records and calls `reward` (or `reward_batch` when `batched`), through `safe_rewards`.
- `MultiTurnTask`: an environment factory. `make_env(prompt)` gives an `Environment` with
  `reset() -> observation` and `step(action) -> StepResult(observation, reward, done, info)`;
  the rollout driver (rlx.rollout.multiturn) alternates policy turns and observations.

Conventions shared by both: a reward must be a finite real number that float32 can hold
(`as_reward`); one that is not, or a reward function / environment that raises (even
`SystemExit`) or runs past its time limit, scores 0 and is counted in `RewardStats`.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Sequence

log = logging.getLogger(__name__)

FLOAT32_MAX = 3.4028234663852886e38  # rewards become float32 tensors; anything larger turns into inf
# What user reward / environment code may raise without stopping the run: every Exception, and
# SystemExit (a stray sys.exit()); KeyboardInterrupt still stops it.
USER_CODE_ERRORS = (Exception, SystemExit)


class RewardTimeout(TimeoutError):
    """A reward call ran past task.reward_timeout_s."""


@contextmanager
def time_limit(seconds: float | None):
    """Raise RewardTimeout in the code inside once `seconds` of wall time have passed (a SIGALRM
    timer, so it interrupts Python code and sleeps). No limit for None, or off the main thread
    (Python delivers signals to the main thread only)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise RewardTimeout(f"reward call ran past task.reward_timeout_s={seconds}")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class Prompt:
    """One prompt of a task: the text shown to the policy plus whatever the reward needs."""

    text: str
    info: dict[str, Any] = field(default_factory=dict)


class Task:
    """What every task gives the trainer: prompts, evaluation splits, an alphabet for a
    character tokenizer, and (optionally) warm-start data for the base policy."""

    name: str = "task"

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


class SingleTurnTask(Task):
    """Base class of single-turn tasks: prompt -> completion -> reward in [0, 1] and info.

    Subclasses implement `reward` (or set `batched = True` and implement `reward_batch`),
    `train_prompts`, `eval_prompts`, `alphabet` and, when the task provides its own base
    policy, `warmstart_texts`.
    """

    batched: bool = False

    def reward(self, prompt: Prompt, completion: str) -> float:
        raise NotImplementedError

    def reward_batch(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> Sequence[Any]:
        """One reward per (prompt, completion) from a single call (used when `batched`)."""
        raise NotImplementedError


@dataclass(frozen=True)
class StepResult:
    """What an environment returns for one policy turn (gym's step without `truncated`:
    truncation is decided by the rollout driver's caps, not by the environment)."""

    observation: str
    reward: float
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


class Environment:
    """One episode. `reset()` returns the first observation (the context the policy starts
    from); `step(action)` consumes one policy turn (its text, without the end-of-turn token)
    and returns the next observation, the turn's reward, whether the episode is over, and info.
    An environment must not raise on malformed actions: it answers with an error observation."""

    def reset(self) -> str:
        raise NotImplementedError

    def step(self, action: str) -> StepResult:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the episode holds (called once the episode is over, however it ended)."""


class MultiTurnTask(Task):
    """Base class of multi-turn tasks: an environment per prompt, plus the episode caps.

    The return of an episode is the sum of its step rewards. Caps (set by the task's config):
    `max_turns` policy turns, `max_turn_tokens` generated tokens per turn (None: the rollout's
    `max_new_tokens`), `max_total_tokens` tokens after the first observation (policy and
    environment tokens together). An episode that hits a cap before `done` is truncated and
    keeps the rewards it earned so far.
    """

    max_turns: int = 4
    max_turn_tokens: int | None = None
    max_total_tokens: int = 512

    def make_env(self, prompt: Prompt) -> Environment:
        raise NotImplementedError


# The end-of-turn token as text: the character tokenizer's EOS (rlx.models.SPECIAL_TOKENS[2]),
# which its tokenizer parses back to the single EOS token. Multi-turn warm-start contexts use it
# between a policy turn and the next observation, exactly where the rollout driver keeps the EOS.
TURN_END = "<eos>"


def episode_warmstart_pairs(first_observation: str, turns: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Supervised (context, action) pairs of one episode, one per policy turn.

    turns = [(action_1, observation_1), ..., (action_n, observation_n)] (the last observation
    is ignored). context_k = first_observation + sum_{j<k} (action_j + TURN_END + observation_j),
    the text whose tokens the rollout driver feeds the policy before its k-th turn.
    """
    pairs, context = [], first_observation
    for action, observation in turns:
        pairs.append((context, action))
        context = context + action + TURN_END + observation
    return pairs


def is_multi_turn(task: Any) -> bool:
    return isinstance(task, MultiTurnTask)


@dataclass
class RewardStats:
    """Counts of reward-function failures, reset once per iteration by the trainer."""

    errors: int = 0
    first_error: str | None = None

    def record(self, task_name: str, exc: BaseException, count: int = 1, source: str = "reward function") -> None:
        """Count `count` failed samples; log the first failure of the iteration as a warning."""
        self.errors += count
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"
            log.warning("%s of task %r failed (sample scored 0): %s", source, task_name, self.first_error)


def as_reward(value: Any) -> float:
    """value as a float that stays finite in float32 (the training dtype of rewards). Accepts real
    numbers (int, float, bool, numpy scalars, 0-d tensors: anything with __float__ but text);
    raises TypeError for text, None and other non-numbers, ValueError for nan, inf and
    |value| > float32's largest finite value (3.4e38)."""
    if isinstance(value, (str, bytes)) or not (isinstance(value, Real) or hasattr(value, "__float__")):
        raise TypeError(f"reward is not a number: {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"reward is not finite: {number}")
    if abs(number) > FLOAT32_MAX:
        raise ValueError(f"reward {number:g} overflows float32 (|reward| <= {FLOAT32_MAX:.4g})")
    return number


def safe_rewards(
    task: SingleTurnTask, prompts: Sequence[Prompt], completions: Sequence[str], stats: RewardStats,
    timeout_s: float | None = None,
) -> list[float]:
    """Score each (prompt, completion); a reward that raises (SystemExit included), runs past
    `timeout_s` or is not a finite float32 number scores 0.

    Every failure is counted in `stats` (and the first one logged once) so a broken reward
    function shows up in the metrics instead of killing a long run. A `batched` task is called
    once for the whole batch (`timeout_s` then limits that call): if it raises or returns the
    wrong number of rewards, every sample scores 0 and counts as a failure; a single bad element
    scores 0 on its own.
    """
    if getattr(task, "batched", False):
        return _safe_batched_rewards(task, prompts, completions, stats, timeout_s)
    rewards = []
    for prompt, completion in zip(prompts, completions, strict=True):
        try:
            with time_limit(timeout_s):
                value = as_reward(task.reward(prompt, completion))
        except USER_CODE_ERRORS as exc:  # any user reward failure must not crash the run
            value = 0.0
            stats.record(task.name, exc)
        rewards.append(value)
    return rewards


def _safe_batched_rewards(task, prompts: Sequence[Prompt], completions: Sequence[str],
                          stats: RewardStats, timeout_s: float | None) -> list[float]:
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    try:
        with time_limit(timeout_s):
            values = list(task.reward_batch(prompts, completions))
        if len(values) != len(prompts):
            raise ValueError(f"batched reward returned {len(values)} values for {len(prompts)} samples")
    except USER_CODE_ERRORS as exc:
        stats.record(task.name, exc, count=len(prompts))
        return [0.0] * len(prompts)
    rewards = []
    for value in values:
        try:
            rewards.append(as_reward(value))
        except USER_CODE_ERRORS as exc:
            stats.record(task.name, exc)
            rewards.append(0.0)
    return rewards

"""The tool world as a multi-turn task: one environment per generated task, seeded splits,
and expert episodes for the warm-start.

Episode: the first observation is the instruction (`phone of ann?` + newline). Each policy turn
is one JSON action (rlx.tasks.toolworld.protocol); a call is answered with the tool's result,
a malformed or refused call with {"error": ...} (the episode goes on), and an answer ends the
episode with reward = fraction of the task's checks that pass, 0 unless one of the task's own
checks passes (generator.checks_reward: doing nothing earns nothing). An episode cut off by
the turn or token caps earns 0.
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

from rlx.tasks.base import Environment, MultiTurnTask, Prompt, StepResult, episode_warmstart_pairs
from rlx.tasks.toolworld.apps import ToolError, call_tool
from rlx.tasks.toolworld.generator import (
    LEVELS,
    ToolTask,
    checks_reward,
    fresh_world,
    generate_task,
    parse_observation,
    right_expert,
    run_checks,
    wrong_expert,
)
from rlx.tasks.toolworld.protocol import Answer, ProtocolError, error_text, observation_text, parse_action

# Every character the world, its instructions, results and errors can contain.
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 {}[]\":,.?_-\n\\"


class ToolWorldEnv(Environment):
    """The in-memory apps of one task; nothing outside this object is read or written."""

    def __init__(self, task: ToolTask):
        self.task = task
        self.state: dict[str, Any] = fresh_world(task)

    def reset(self) -> str:
        self.state = fresh_world(self.task)
        return self.task.instruction + "\n"

    def step(self, action: str) -> StepResult:
        try:
            parsed = parse_action(action)
            if isinstance(parsed, Answer):
                passed = run_checks(self.task.checks, self.task.world, self.state, parsed.value)
                return StepResult("", checks_reward(self.task.checks, passed), True, {"checks": passed})
            result = call_tool(self.state, parsed.tool, parsed.args)
        except (ProtocolError, ToolError) as exc:
            return StepResult(error_text(str(exc)), 0.0, False, {"error": str(exc)})
        return StepResult(observation_text(result), 0.0, False, {})


def expert_turns(task: ToolTask, expert, max_turns: int) -> tuple[str, list[tuple[str, str]]]:
    """(first observation, [(action, observation), ...]) of the expert playing `task`."""
    env = ToolWorldEnv(task)
    first = env.reset()
    seen: list = []
    turns = []
    for _ in range(max_turns):
        action = expert(seen)
        result = env.step(action)
        turns.append((action, result.observation))
        if result.done:
            break
        seen.append(parse_observation(result.observation))
    return first, turns


class ToolWorldTask(MultiTurnTask):
    """Multi-turn tool use over contacts, calendar, notes and a shop.

    levels: difficulty levels trained on (tool calls needed: 1, 2 or 3).
    n_train / n_eval: tasks per level in the training and held-out splits (disjoint seeds:
    "<seed>:train:<level>:<i>" and "<seed>:heldout:<level>:<i>").
    eval_levels: levels of the held-out split (default: `levels`).
    warmstart_mix: {level: wrong fraction}; the warm-start draws fresh worlds of these levels
    (never a training or held-out task) and plays the expert, or a plausible mistake with the
    given probability.
    """

    def __init__(self, name: str = "toolworld", levels: Sequence[int] = (1,), n_train: int = 256, n_eval: int = 32,
                 eval_levels: Sequence[int] | None = None, eval_train_size: int = 32, seed: int = 0,
                 max_turns: int = 4, max_turn_tokens: int | None = 72, max_total_tokens: int = 384,
                 warmstart_mix: Mapping[Any, float] | None = None):
        self.name = name
        self.levels = [int(level) for level in levels]
        self.eval_levels = [int(level) for level in (eval_levels or self.levels)]
        for level in self.levels + self.eval_levels:
            if level not in LEVELS:
                raise ValueError(f"task.levels / eval_levels: level {level} is not one of {list(LEVELS)}")
        self.seed = seed
        self.max_turns, self.max_turn_tokens, self.max_total_tokens = max_turns, max_turn_tokens, max_total_tokens
        self.warmstart_mix = {int(k): float(v) for k, v in (warmstart_mix or {1: 0.4}).items()}
        self.eval_train_size = eval_train_size
        self._train = [generate_task(f"{seed}:train:{level}:{i}", level) for level in self.levels for i in range(n_train)]
        seen = {(t.instruction, repr(t.world)) for t in self._train}
        self._heldout = [t for level in self.eval_levels for i in range(n_eval)
                         if (t := generate_task(f"{seed}:heldout:{level}:{i}", level))
                         and (t.instruction, repr(t.world)) not in seen]
        self._tasks = {t.id: t for t in self._train + self._heldout}

    @staticmethod
    def _prompt(task: ToolTask, split: str) -> Prompt:
        return Prompt(task.instruction, {"task_id": task.id, "level": task.level, "template": task.template,
                                         "split": split})

    def train_prompts(self) -> list[Prompt]:
        return [self._prompt(t, "train") for t in self._train]

    def eval_prompts(self) -> dict[str, list[Prompt]]:
        step = max(1, len(self._train) // max(1, self.eval_train_size))
        return {"eval": [self._prompt(t, "heldout") for t in self._heldout],
                "eval_train": [self._prompt(t, "train") for t in self._train[::step][: self.eval_train_size]]}

    def task_of(self, prompt: Prompt) -> ToolTask:
        task_id = prompt.info["task_id"]
        return self._tasks.get(task_id) or generate_task(task_id, int(prompt.info["level"]))

    def make_env(self, prompt: Prompt) -> ToolWorldEnv:
        return ToolWorldEnv(self.task_of(prompt))

    def alphabet(self) -> str:
        return ALPHABET

    def warmstart_texts(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        """n (context, action) pairs from expert episodes on fresh worlds (one pair per turn)."""
        pairs: list[tuple[str, str]] = []
        levels = sorted(self.warmstart_mix)
        while len(pairs) < n:
            level = rng.choice(levels)
            task = generate_task(f"{self.seed}:warmstart:{rng.getrandbits(64)}", level)
            wrong = rng.random() < self.warmstart_mix[level]
            expert = wrong_expert(task, rng) if wrong else right_expert(task)
            first, turns = expert_turns(task, expert, self.max_turns)
            pairs.extend(episode_warmstart_pairs(first, turns))
        return pairs[:n]

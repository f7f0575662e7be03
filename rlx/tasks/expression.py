"""The default task: write an arithmetic expression over small integers that equals a target.

Prompt `T=17:`, completion e.g. `3*5+2`. Every target has many correct answers (7 to ~70), so
a policy gradient that sharpens onto favourite answers shows up as falling entropy and falling
numbers of distinct correct answers. The base policy comes from a supervised warm-start on
answers drawn with Zipf weights (favourites differ per target) plus near-miss wrong answers.
Hard targets are warm-started with few correct answers and held out of RL training, so pass@k
on them can fall when the policy loses diversity.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

from rlx.tasks.base import Prompt, SingleTurnTask

_EXPRESSION = re.compile(r"^(0|[1-9][0-9]*)([+*](0|[1-9][0-9]*)){0,2}$")


def evaluate_expression(text: str) -> int | None:
    """Value of `text` if it is a well-formed expression of + and * over non-negative integers
    without leading zeros and with at most three operands, else None (malformed)."""
    if not _EXPRESSION.match(text):
        return None
    return sum(_product(term) for term in text.split("+"))


def _product(term: str) -> int:
    value = 1
    for factor in term.split("*"):
        value *= int(factor)
    return value


@lru_cache(maxsize=None)
def expressions_by_value(max_addend: int, max_factor: int) -> dict[int, tuple[str, ...]]:
    """All expressions of the forms a+b, a*b and a*b+c grouped by value.

    a+b: a, b in [1, max_addend]; a*b: a, b in [2, max_factor]; a*b+c: a, b in [2, max_factor],
    c in [1, max_addend]. Sorted, so the enumeration is deterministic.
    """
    table: dict[int, list[str]] = {}
    addends = range(1, max_addend + 1)
    factors = range(2, max_factor + 1)
    for a in addends:
        for b in addends:
            table.setdefault(a + b, []).append(f"{a}+{b}")
    for a in factors:
        for b in factors:
            table.setdefault(a * b, []).append(f"{a}*{b}")
            for c in addends:
                table.setdefault(a * b + c, []).append(f"{a}*{b}+{c}")
    return {value: tuple(sorted(items)) for value, items in table.items()}


def zipf_weights(n: int, exponent: float) -> list[float]:
    """w_k = 1 / k^exponent for k = 1..n (unnormalised)."""
    return [1.0 / (k**exponent) for k in range(1, n + 1)]


def near_miss(expression: str, rng: random.Random) -> str:
    """A wrong answer close to a right one: one operand shifted by 1 or 2 (kept non-negative)."""
    parts = re.split(r"([+*])", expression)
    operand_slots = list(range(0, len(parts), 2))
    slot = rng.choice(operand_slots)
    shift = rng.choice([-2, -1, 1, 2])
    parts[slot] = str(max(0, int(parts[slot]) + shift))
    return "".join(parts)


class ExpressionTask(SingleTurnTask):
    """Targets `train_targets` are trained on; `heldout_targets` are evaluation-only (hard)."""

    def __init__(
        self,
        name: str = "expression",
        train_targets: tuple[int, int] = (5, 30),
        heldout_targets: tuple[int, int] = (31, 40),
        max_addend: int = 20,
        max_factor: int = 9,
        zipf_exponent: float = 1.2,
        warmstart_wrong_frac: float = 0.4,
        heldout_wrong_frac: float = 0.85,
        target_digits: int = 2,
        seed: int = 1234,
    ):
        self.name = name
        self.train_targets = list(range(train_targets[0], train_targets[1] + 1))
        self.heldout_targets = list(range(heldout_targets[0], heldout_targets[1] + 1))
        self.max_addend = max_addend
        self.max_factor = max_factor
        self.zipf_exponent = zipf_exponent
        self.warmstart_wrong_frac = warmstart_wrong_frac
        self.heldout_wrong_frac = heldout_wrong_frac
        self.target_digits = target_digits
        table = expressions_by_value(max_addend, max_factor)
        missing = [t for t in self.train_targets + self.heldout_targets if t not in table]
        if missing:
            raise ValueError(f"task targets {missing} have no expression with these operand bounds")
        # Each target's answers in a fixed random order, so the favourites differ per target.
        order_rng = random.Random(seed)
        self._ranked: dict[int, list[str]] = {}
        for target in self.train_targets + self.heldout_targets:
            answers = list(table[target])
            order_rng.shuffle(answers)
            self._ranked[target] = answers

    def prompt_text(self, target: int) -> str:
        return f"T={target:0{self.target_digits}d}:"

    def _prompt(self, target: int, split: str) -> Prompt:
        return Prompt(self.prompt_text(target), {"target": target, "split": split})

    def train_prompts(self) -> list[Prompt]:
        return [self._prompt(t, "train") for t in self.train_targets]

    def eval_prompts(self) -> dict[str, list[Prompt]]:
        return {
            "eval": [self._prompt(t, "heldout") for t in self.heldout_targets],
            "eval_train": self.train_prompts(),
        }

    def alphabet(self) -> str:
        return "0123456789+*T=:"

    def correct_answers(self, target: int) -> tuple[str, ...]:
        return tuple(self._ranked[target])

    def reward(self, prompt: Prompt, completion: str) -> float:
        """1 if the completion (stripped) is a well-formed expression equal to the target, else 0."""
        return float(evaluate_expression(completion.strip()) == prompt.info["target"])

    def warmstart_texts(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        """Training targets: a Zipf-weighted correct answer, or (warmstart_wrong_frac) a near miss.
        Held-out targets appear too, but mostly as near misses (heldout_wrong_frac)."""
        targets = self.train_targets + self.heldout_targets
        pairs = []
        for _ in range(n):
            target = rng.choice(targets)
            answers = self._ranked[target]
            answer = rng.choices(answers, weights=zipf_weights(len(answers), self.zipf_exponent))[0]
            wrong_frac = self.heldout_wrong_frac if target in self.heldout_targets else self.warmstart_wrong_frac
            if rng.random() < wrong_frac:
                answer = near_miss(answer, rng)
            pairs.append((self.prompt_text(target), answer))
        return pairs

"""The default task: write an arithmetic expression over small integers that equals a target.

Prompt `T=17:`, completion e.g. `3*5+2`. Every target has many correct answers (7 to ~70), so
a policy gradient that sharpens onto favourite answers shows up as falling entropy and falling
numbers of distinct correct answers. The base policy comes from a supervised warm-start on
answers drawn with Zipf weights (favourites differ per target) plus near-miss wrong answers.
Hard targets are warm-started with few correct answers and held out of RL training, so pass@k
on them can fall when the policy loses diversity.

Options for the regimes where entropy regulators act (defaults reproduce the plain task):
- `reward_mode: random`: on training prompts the reward is Bernoulli(random_reward_p),
  independent of the answer (the random-reward testbed of Park et al. 2025, where clipping alone
  moves entropy). Each reward call draws u = hash(random_reward_seed, call index, prompt,
  completion) / 2^64 (blake2b) and scores float(u < p): deterministic within a run, a fresh draw
  for every sample (a repeated answer gets a new draw), and different across RL seeds because the
  sampled completions differ. The call index counts this task object's training reward calls
  (it restarts on resume: same distribution, another draw). Evaluation splits keep the answer's
  reward, so pass@k measures the real task.
- `answer_forms` (operator patterns, FORMS) and `exclude_top_answers` (each target's first N
  answers in the warm-start's Zipf order, its favourites) make only some correct answers score 1,
  on every split: the phase B of `experiment=sequential_lost`, on phase A's own prompts, rewards
  answers that a collapsed phase A stopped producing.
"""

from __future__ import annotations

import hashlib
import random
import re
from functools import lru_cache

from rlx.errors import ConfigError
from rlx.tasks.base import Prompt, SingleTurnTask

_EXPRESSION = re.compile(r"^(0|[1-9][0-9]*)([+*](0|[1-9][0-9]*)){0,2}$")


def evaluate_expression(text: str) -> int | None:
    """Value of `text` if it is a well-formed expression of + and * over non-negative integers
    without leading zeros and with at most three operands, else None (malformed)."""
    if not _EXPRESSION.match(text):
        return None
    return sum(_product(term) for term in text.split("+"))


# An expression's form is its operator pattern; `answer_forms` names them.
FORMS = {"": "number", "+": "sum", "*": "product", "*+": "product_sum", "+*": "sum_product",
         "++": "sum3", "**": "product3"}
REWARD_MODES = ("answer", "random")


def expression_form(text: str) -> str | None:
    """The form of a well-formed expression (FORMS: "3*5+2" -> product_sum), else None."""
    if not _EXPRESSION.match(text):
        return None
    return FORMS["".join(c for c in text if c in "+*")]


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
        reward_mode: str = "answer",
        random_reward_p: float = 0.5,
        random_reward_seed: int = 0,
        answer_forms: list[str] | None = None,
        exclude_top_answers: int = 0,
        heldout_warmstart_weight: float = 1.0,
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
        if reward_mode not in REWARD_MODES:
            raise ConfigError(f"task.reward_mode={reward_mode!r}: must be one of {list(REWARD_MODES)}")
        if not 0.0 <= random_reward_p <= 1.0:
            raise ConfigError(f"task.random_reward_p={random_reward_p!r}: must be in [0, 1]")
        unknown = sorted(set(answer_forms or ()) - set(FORMS.values()))
        if unknown or (answer_forms is not None and not answer_forms):
            raise ConfigError(f"task.answer_forms={answer_forms!r}: must be null (every form) or a non-empty "
                              f"list of {sorted(FORMS.values())}")
        if exclude_top_answers < 0:
            raise ConfigError(f"task.exclude_top_answers={exclude_top_answers!r}: must be >= 0")
        self.reward_mode = reward_mode
        self.random_reward_p = float(random_reward_p)
        self.random_reward_seed = int(random_reward_seed)
        self.answer_forms = None if answer_forms is None else frozenset(answer_forms)
        self.exclude_top_answers = int(exclude_top_answers)
        if heldout_warmstart_weight < 0:
            raise ConfigError(f"task.heldout_warmstart_weight={heldout_warmstart_weight!r}: must be >= 0")
        self.heldout_warmstart_weight = float(heldout_warmstart_weight)
        self._random_calls = 0
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
        self._excluded = {t: frozenset(a[:self.exclude_top_answers]) for t, a in self._ranked.items()}

    def prompt_text(self, target: int) -> str:
        return f"T={target:0{self.target_digits}d}:"

    def _prompt(self, target: int, split: str) -> Prompt:
        return Prompt(self.prompt_text(target), {"target": target, "split": split})

    def train_prompts(self) -> list[Prompt]:
        return [self._prompt(t, "train") for t in self.train_targets]

    def eval_prompts(self) -> dict[str, list[Prompt]]:
        # under a random reward, evaluation scores the answer: its training prompts are marked apart
        train_split = "train" if self.reward_mode == "answer" else "eval_train"
        return {
            "eval": [self._prompt(t, "heldout") for t in self.heldout_targets],
            "eval_train": [self._prompt(t, train_split) for t in self.train_targets],
        }

    def alphabet(self) -> str:
        return "0123456789+*T=:"

    def correct_answers(self, target: int) -> tuple[str, ...]:
        return tuple(self._ranked[target])

    def reward(self, prompt: Prompt, completion: str) -> float:
        """1 if the completion (stripped) is a well-formed expression equal to the target (and, with
        answer_forms / exclude_top_answers, an answer they admit), else 0; under reward_mode=random,
        on training prompts, a Bernoulli(random_reward_p) draw instead (module docstring)."""
        if self.reward_mode == "random" and prompt.info.get("split", "train") == "train":
            return self.random_reward(prompt, completion)
        text = completion.strip()
        target = prompt.info["target"]
        if evaluate_expression(text) != target:
            return 0.0
        return float(self.admits(target, text))

    def admits(self, target: int, answer: str) -> bool:
        """Whether a correct answer counts under answer_forms and exclude_top_answers."""
        if self.answer_forms is not None and expression_form(answer) not in self.answer_forms:
            return False
        return answer not in self._excluded.get(target, ())

    def random_reward(self, prompt: Prompt, completion: str) -> float:
        """float(u < random_reward_p), u uniform from a hash of (seed, call index, prompt, completion)."""
        key = f"{self.random_reward_seed}|{self._random_calls}|{prompt.text}|{completion}".encode()
        self._random_calls += 1
        u = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0**64
        return float(u < self.random_reward_p)

    def warmstart_texts(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        """Training targets: a Zipf-weighted correct answer, or (warmstart_wrong_frac) a near miss.
        Held-out targets appear too, but mostly as near misses (heldout_wrong_frac), each drawn
        heldout_warmstart_weight times as often as a training target (0: never seen)."""
        targets = self.train_targets + self.heldout_targets
        weights = [1.0] * len(self.train_targets) + [self.heldout_warmstart_weight] * len(self.heldout_targets)
        pairs = []
        for _ in range(n):
            if self.heldout_warmstart_weight == 1.0:  # uniform over targets
                target = rng.choice(targets)
            else:
                target = rng.choices(targets, weights=weights)[0]
            answers = self._ranked[target]
            answer = rng.choices(answers, weights=zipf_weights(len(answers), self.zipf_exponent))[0]
            wrong_frac = self.heldout_wrong_frac if target in self.heldout_targets else self.warmstart_wrong_frac
            if rng.random() < wrong_frac:
                answer = near_miss(answer, rng)
            pairs.append((self.prompt_text(target), answer))
        return pairs

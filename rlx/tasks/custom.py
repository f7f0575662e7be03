"""User-defined rewards on user prompts, without touching rlx.

    rlx-train task=custom task.reward_fn=mypkg.rewards:exact task.prompts=data/prompts.jsonl
    rlx-train task=custom task.reward_fn=rewards.py:score task.prompts=data.parquet task.batched=true

Rows (JSONL or parquet) need a text field `prompt`; an optional `answer` and every other field
are passed to the reward function as keyword arguments:

    fn(prompt: str, completion: str, **info) -> float                     (task.batched=false)
    fn(prompts: list[str], completions: list[str], **info) -> list[float]  (task.batched=true,
        TRL's convention: each info field is a list aligned with the prompts, None where a row
        lacks it)

A reward that raises or is not a finite number scores 0 and is counted (`train/reward_errors`)
with a logged warning, as for every task (rlx.tasks.base.safe_rewards).

Tokenizer and base policy (our choice, documented here and in conf/task/custom.yaml):
- a pretrained model (model.source != scratch) brings its own tokenizer and is the base policy;
  nothing below is used;
- the tiny from-scratch models use a character tokenizer: its alphabet is `task.alphabet` if
  given, else every character of the prompts, answers and warm-start completions; the base
  policy is warm-started on `task.warmstart_file` (JSONL/parquet rows with `prompt` and
  `completion`) if given, else on the rows' `answer` fields. A task with neither fails at
  warm-start with a message saying so.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from rlx.config import ConfigError
from rlx.tasks.base import Prompt, SingleTurnTask
from rlx.tasks.datafiles import derive_alphabet, import_callable, load_rows, require_field, split_rows


def rows_to_prompts(rows: Sequence[dict[str, Any]]) -> list[Prompt]:
    """Prompt(text=row["prompt"], info=every other field of the row, exactly as in the file)."""
    return [Prompt(row["prompt"], {k: v for k, v in row.items() if k != "prompt"}) for row in rows]


def batched_info(prompts: Sequence[Prompt]) -> dict[str, list[Any]]:
    """Column-wise info for a batched reward: {field: [value or None per prompt]}."""
    fields = sorted({k for p in prompts for k in p.info})
    return {f: [p.info.get(f) for p in prompts] for f in fields}


class CustomTask(SingleTurnTask):
    """Prompts from a file, reward from a user function (see the module docstring)."""

    def __init__(self, reward_fn: str | None = None, prompts: str | None = None, name: str = "custom",
                 batched: bool = False, eval_prompts: str | None = None, eval_fraction: float = 0.1,
                 eval_size: int = 64, alphabet: str | None = None, warmstart_file: str | None = None,
                 seed: int = 0):
        if not reward_fn or not prompts:
            raise ConfigError("task=custom needs task.reward_fn=package.module:function and task.prompts=file.jsonl "
                              f"(got reward_fn={reward_fn!r}, prompts={prompts!r})")
        self.name = name
        self.batched = bool(batched)
        self.fn = import_callable(reward_fn, "task.reward_fn")
        rows = load_rows(prompts, "task.prompts")
        require_field(rows, "prompt", "task.prompts", prompts)
        if eval_prompts:
            eval_rows = load_rows(eval_prompts, "task.eval_prompts")
            require_field(eval_rows, "prompt", "task.eval_prompts", eval_prompts)
            train_rows = rows
        else:
            train_rows, eval_rows = split_rows(rows, eval_fraction, seed)
        if not train_rows:
            raise ConfigError(f"task.prompts={prompts!r}: no training rows")
        self._train = rows_to_prompts(train_rows)
        self._eval = rows_to_prompts(eval_rows)
        self.eval_size = eval_size
        self._warmstart = self._warmstart_pairs(warmstart_file)
        self._alphabet = alphabet or derive_alphabet(
            [p.text for p in self._train + self._eval]
            + [str(p.info["answer"]) for p in self._train + self._eval if p.info.get("answer") is not None]
            + [c for _, c in self._warmstart])

    def _warmstart_pairs(self, warmstart_file: str | None) -> list[tuple[str, str]]:
        if warmstart_file:
            rows = load_rows(warmstart_file, "task.warmstart_file")
            require_field(rows, "prompt", "task.warmstart_file", warmstart_file)
            require_field(rows, "completion", "task.warmstart_file", warmstart_file)
            return [(r["prompt"], r["completion"]) for r in rows]
        return [(p.text, str(p.info["answer"])) for p in self._train if p.info.get("answer") is not None]

    def train_prompts(self) -> list[Prompt]:
        return list(self._train)

    def eval_prompts(self) -> dict[str, list[Prompt]]:
        splits = {"eval": self._eval[: self.eval_size], "eval_train": self._train[: self.eval_size]}
        return {name: prompts for name, prompts in splits.items() if prompts}

    def alphabet(self) -> str:
        return self._alphabet

    def reward(self, prompt: Prompt, completion: str) -> Any:
        return self.fn(prompt.text, completion, **prompt.info)

    def reward_batch(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> Any:
        return self.fn([p.text for p in prompts], list(completions), **batched_info(prompts))

    def warmstart_texts(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        """n (prompt, completion) pairs drawn uniformly from the warm-start file or the answers."""
        if not self._warmstart:
            raise ConfigError("task=custom with a from-scratch model needs warm-start data: rows with an 'answer' "
                              "field or task.warmstart_file=<jsonl with prompt, completion> (or use a pretrained "
                              "model)")
        return [rng.choice(self._warmstart) for _ in range(n)]

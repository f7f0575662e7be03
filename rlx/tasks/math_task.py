"""Math word problems: a GSM8K/MATH file the user points at, or the shipped generated set.

    rlx-train task=math                                        # generated word problems, offline
    rlx-train task=math task.path=~/data/gsm8k/train.jsonl task.eval_path=~/data/gsm8k/test.jsonl
    rlx-train task=math task.path=math_train.parquet task.style=boxed

Rows: the question in `question` (GSM8K), `problem` (MATH) or `prompt`; the gold answer in
`answer` (its `####` / boxed part if it has one, else the whole field) or, for MATH, the last
`\\boxed{}` of `solution`. A completion scores 1 when its extracted final answer (`####` or
`\\boxed{}`, per task.style) equals the gold one (rlx.tasks.math_answers), else 0; a completion
without the answer marker scores 0.

Base policy of the tiny from-scratch models: a warm-start on the rows' worked solutions
(`answer` with working, or `solution`), a `warmstart_wrong_frac` share of them with the final
number shifted by 1 or 2 (a near miss), on training rows only.
"""

from __future__ import annotations

import random
import re
from typing import Any

from rlx.config import ConfigError
from rlx.tasks.base import Prompt, SingleTurnTask
from rlx.tasks.datafiles import derive_alphabet, load_rows, split_rows
from rlx.tasks.math_answers import answers_equal, extract_answer, reference_answer
from rlx.tasks.word_problems import word_problems

QUESTION_FIELDS = ("question", "problem", "prompt")


def question_of(row: dict[str, Any], field: str | None) -> str | None:
    """The row's question text (the named field, else the first of QUESTION_FIELDS present)."""
    for name in ([field] if field else QUESTION_FIELDS):
        if isinstance(row.get(name), str):
            return row[name]
    return None


def worked_solution(row: dict[str, Any], answer_field: str | None) -> str | None:
    """The text a warm-start imitates: the MATH `solution`, else the (GSM8K) answer field."""
    if isinstance(row.get("solution"), str):
        return row["solution"]
    value = row.get(answer_field or "answer")
    return None if value is None else str(value)


def near_miss_solution(solution: str, answer: str, rng: random.Random) -> str:
    """The solution with its final integer answer v replaced by v + d, d in {-2, -1, 1, 2}, in
    the `#### v` / `\\boxed{v}` marker and on the last `= v` of the working. Non-integer answers
    are returned unchanged."""
    if not re.fullmatch(r"-?\d+", answer.strip()):
        return solution
    value = int(answer)
    wrong = str(value + rng.choice([-2, -1, 1, 2]))
    text = re.sub(rf"(####\s*){re.escape(answer)}\s*$", rf"\g<1>{wrong}", solution.rstrip())
    text = text.replace(f"\\boxed{{{answer}}}", f"\\boxed{{{wrong}}}")
    last = text.rfind(f"={answer}")
    if last >= 0:
        text = text[:last] + f"={wrong}" + text[last + len(answer) + 1:]
    return text


class MathTask(SingleTurnTask):
    """Reward 1 for a final answer equal to the reference (see the module docstring)."""

    def __init__(self, name: str = "math", path: str | None = None, eval_path: str | None = None,
                 question_field: str | None = None, answer_field: str | None = None, style: str = "auto",
                 prompt_template: str = "{question}\n", n_generated: int = 576, eval_fraction: float = 0.1,
                 eval_size: int = 64, warmstart_wrong_frac: float = 0.4, alphabet: str | None = None,
                 seed: int = 0):
        if style not in ("auto", "gsm8k", "boxed"):
            raise ConfigError(f"task.style={style!r}: allowed 'auto', 'gsm8k', 'boxed'")
        if "{question}" not in prompt_template:
            raise ConfigError(f"task.prompt_template={prompt_template!r}: must contain {{question}}")
        self.name, self.style, self.template = name, style, prompt_template
        self.question_field, self.answer_field = question_field, answer_field
        self.eval_size, self.wrong_frac = eval_size, warmstart_wrong_frac
        rows = load_rows(path, "task.path") if path else word_problems(n_generated, seed)
        if eval_path:
            train_rows, eval_rows = rows, load_rows(eval_path, "task.eval_path")
        else:
            train_rows, eval_rows = split_rows(rows, eval_fraction, seed)
        self._train = self._prompts(train_rows, "train", path or "<generated>")
        self._eval = self._prompts(eval_rows, "heldout", eval_path or path or "<generated>")
        if not self._train:
            raise ConfigError(f"task.path={path!r}: no usable rows (need a question and an answer)")
        self._alphabet = alphabet or derive_alphabet(
            [p.text for p in self._train + self._eval] + [p.info["solution"] for p in self._train]
            + [p.info["answer"] for p in self._train + self._eval] + ["0123456789-"])

    def _prompts(self, rows: list[dict], split: str, source: str) -> list[Prompt]:
        prompts = []
        for row in rows:
            question = question_of(row, self.question_field)
            reference = (reference_answer(row.get(self.answer_field)) if self.answer_field
                         else reference_answer(row.get("answer"), row.get("solution")))
            if question is None or reference is None:
                continue
            solution = worked_solution(row, self.answer_field) or f"#### {reference}"
            prompts.append(Prompt(self.template.format(question=question),
                                  {"answer": reference, "solution": solution, "split": split}))
        if rows and not prompts:
            raise ConfigError(f"{source}: no row has a question ({'/'.join(QUESTION_FIELDS)}) and an answer "
                              "(answer or solution with \\boxed{})")
        return prompts

    def train_prompts(self) -> list[Prompt]:
        return list(self._train)

    def eval_prompts(self) -> dict[str, list[Prompt]]:
        splits = {"eval": self._eval[: self.eval_size], "eval_train": self._train[: self.eval_size]}
        return {name: prompts for name, prompts in splits.items() if prompts}

    def alphabet(self) -> str:
        return self._alphabet

    def reward(self, prompt: Prompt, completion: str) -> float:
        """1 if the extracted final answer equals the reference, else 0 (no marker: 0)."""
        return float(answers_equal(extract_answer(completion, self.style), prompt.info["answer"]))

    def warmstart_texts(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        """Worked solutions of training rows; a `wrong_frac` share with a near-miss final answer."""
        pairs = []
        for _ in range(n):
            prompt = rng.choice(self._train)
            solution = prompt.info["solution"]
            if rng.random() < self.wrong_frac:
                solution = near_miss_solution(solution, prompt.info["answer"], rng)
            pairs.append((prompt.text, solution))
        return pairs

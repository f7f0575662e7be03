"""A small generated set of arithmetic word problems in GSM8K format (runs offline).

Each row is {"question": ..., "answer": "<working>\\n#### <number>"}, e.g.

    question: "ann has 7 pens and buys 5 more. how many pens now?"
    answer:   "7+5=12\\n#### 12"

One- and two-step problems over + - * and exact division with small operands, drawn from a
seeded generator, so the same seed gives the same set on every machine. Write it out with

    python -m rlx.tasks.word_problems out.jsonl [n] [seed]
"""

from __future__ import annotations

import json
import random
import sys
from typing import Callable

NAMES = ("ann", "bo", "cy", "dee", "eve", "flo", "gus", "ivy")
THINGS = ("pens", "cups", "apples", "books", "coins", "cards", "eggs", "shells")


def _add(rng, name, thing):
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    return f"{name} has {a} {thing} and buys {b} more. how many {thing} now?", f"{a}+{b}={a + b}", a + b


def _sub(rng, name, thing):
    b, c = rng.randint(2, 15), rng.randint(1, 15)
    a = b + c
    return f"{name} has {a} {thing} and gives away {b}. how many {thing} are left?", f"{a}-{b}={c}", c


def _mul(rng, name, thing):
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return f"{name} buys {a} boxes of {b} {thing}. how many {thing} in all?", f"{a}*{b}={a * b}", a * b


def _div(rng, name, thing):
    b, c = rng.randint(2, 9), rng.randint(2, 9)
    a = b * c
    return f"{name} shares {a} {thing} equally among {b} friends. how many {thing} each?", f"{a}/{b}={c}", c


def _add_mul(rng, name, thing):
    a, b, c = rng.randint(1, 20), rng.randint(2, 5), rng.randint(2, 9)
    total = a + b * c
    return (f"{name} has {a} {thing} and buys {b} boxes of {c} {thing}. how many {thing} now?",
            f"{b}*{c}={b * c}\n{a}+{b * c}={total}", total)


TEMPLATES: tuple[Callable, ...] = (_add, _sub, _mul, _div, _add_mul)


def word_problem(rng: random.Random) -> dict[str, str]:
    """One problem: {"question", "answer"} with the working and `#### <number>`."""
    template = rng.choice(TEMPLATES)
    question, working, value = template(rng, rng.choice(NAMES), rng.choice(THINGS))
    return {"question": question, "answer": f"{working}\n#### {value}"}


def word_problems(n: int, seed: int = 0) -> list[dict[str, str]]:
    """n distinct problems from the generator seeded with `seed`."""
    rng = random.Random(seed)
    rows, seen = [], set()
    for _ in range(50 * n):
        if len(rows) == n:
            break
        row = word_problem(rng)
        if row["question"] not in seen:
            seen.add(row["question"])
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip())
        sys.exit(2)
    n = int(argv[1]) if len(argv) > 1 else 576
    seed = int(argv[2]) if len(argv) > 2 else 0
    with open(argv[0], "w", encoding="utf-8") as handle:
        for row in word_problems(n, seed):
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

"""task=math: GSM8K / MATH answer extraction, numeric and string equivalence, local files, and
the generated word problems."""

from __future__ import annotations

import json
import random

import pytest

from rlx.config import ConfigError
from rlx.tasks.math_answers import (
    answers_equal,
    extract_answer,
    extract_boxed,
    extract_gsm8k,
    reference_answer,
    to_number,
)
from rlx.tasks.math_task import MathTask, near_miss_solution
from rlx.tasks.word_problems import word_problems


@pytest.mark.parametrize("text,answer", [
    ("48/2 = <<48/2=24>>24 clips.\n#### 72", "72"),
    ("#### 1,000", "1,000"),
    ("first #### 3\nthen #### 4", "4"),
    ("####-5", "-5"),
])
def test_gsm8k_extraction(text, answer):
    assert extract_gsm8k(text) == answer


@pytest.mark.parametrize("text", ["72", "the answer is 72", "####", "#### \n"])
def test_gsm8k_without_marker_is_none(text):
    assert extract_gsm8k(text) is None


@pytest.mark.parametrize("text,answer", [
    ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("\\boxed{3} then \\boxed{x^{2}+1}", "x^{2}+1"),
    ("\\fbox{7}", "7"),
])
def test_boxed_extraction(text, answer):
    assert extract_boxed(text) == answer


def test_boxed_unbalanced_and_styles():
    assert extract_boxed("\\boxed{3") is None
    assert extract_answer("\\boxed{2}\n#### 3", "auto") == "2"
    assert extract_answer("\\boxed{2}\n#### 3", "gsm8k") == "3"
    assert extract_answer("#### 3", "boxed") is None
    with pytest.raises(ValueError):
        extract_answer("x", "latex")


@pytest.mark.parametrize("a,b", [
    ("72", "72.0"), ("1,000", "1000"), ("0.5", "\\frac{1}{2}"), ("1/2", "\\dfrac{1}{2}"), ("-3", "-3.00"),
    ("$5$", "5"), ("50\\%", "50"), ("\\text{(B)}", "(B)"), ("x^2 + 1", "x^2+1"), ("\\left(1,2\\right)", "(1,2)"),
    ("7.", "7"), ("1e3", "1000"),
])
def test_equivalent(a, b):
    assert answers_equal(a, b) and answers_equal(b, a)


@pytest.mark.parametrize("a,b", [("72", "73"), ("0.5", "\\frac{1}{3}"), ("x+1", "x-1"), (None, "1"), ("1", None),
                                 ("", "0"), ("1,0001", "10001.5")])
def test_not_equivalent(a, b):
    assert not answers_equal(a, b)


def test_to_number():
    assert to_number("\\frac{7}{2}") == to_number("3.5") == to_number("7/2")
    assert to_number("-\\frac{1}{4}") == to_number("-0.25")
    assert to_number("abc") is None and to_number("\\frac{1}{0}") is None


def test_reference_answer_of_rows():
    assert reference_answer("blah\n#### 18") == "18"
    assert reference_answer(" 42 ") == "42"
    assert reference_answer(None, "so \\boxed{\\pi}") == "\\pi"
    assert reference_answer(None, None) is None


def test_reward_right_wrong_malformed():
    task = MathTask()
    prompt = task.train_prompts()[0]
    gold = prompt.info["answer"]
    assert task.reward(prompt, prompt.info["solution"]) == 1.0
    assert task.reward(prompt, f"#### {gold}") == 1.0
    assert task.reward(prompt, f"\\boxed{{{gold}}}") == 1.0
    assert task.reward(prompt, f"#### {int(gold) + 1}") == 0.0
    assert task.reward(prompt, gold) == 0.0  # no marker: the format is part of the task
    assert task.reward(prompt, "####") == 0.0


def test_generated_set_is_seeded_correct_and_offline():
    rows = word_problems(200, seed=3)
    assert rows == word_problems(200, seed=3) and rows != word_problems(200, seed=4)
    assert len({r["question"] for r in rows}) == 200
    for row in rows:
        for line in row["answer"].splitlines()[:-1]:  # every working line is true arithmetic
            lhs, rhs = line.split("=")
            assert eval(lhs, {"__builtins__": {}}) == int(rhs)  # noqa: S307 - our own generated text
        assert row["answer"].splitlines()[-1] == f"#### {row['answer'].splitlines()[-2].split('=')[1]}"
    task = MathTask()
    assert task.train_prompts() and task.eval_prompts()["eval"]
    train = {p.text for p in task.train_prompts()}
    assert not train & {p.text for p in task.eval_prompts()["eval"]}


def test_local_jsonl_gsm8k_and_parquet_math(tmp_path):
    gsm = tmp_path / "gsm8k.jsonl"
    gsm.write_text("\n".join(json.dumps(r) for r in [
        {"question": "Tom has 3 apples and eats 1. How many left?", "answer": "3-1 = <<3-1=2>>2\n#### 2"},
        {"question": "What is 10 times 10?", "answer": "10*10=<<10*10=100>>100\n#### 100"},
    ]))
    task = MathTask(path=str(gsm), eval_fraction=0)
    prompt = next(p for p in task.train_prompts() if "Tom" in p.text)
    assert prompt.text == "Tom has 3 apples and eats 1. How many left?\n" and prompt.info["answer"] == "2"
    assert task.reward(prompt, "I think #### 2.0") == 1.0
    assert set("<>Tom") <= set(task.alphabet())

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"problem": "Half of 1?", "solution": "It is $\\boxed{\\frac12}$.",
                                          "level": "Level 1"}]), tmp_path / "math.parquet")
    task = MathTask(path=str(tmp_path / "math.parquet"), eval_fraction=0, style="boxed")
    prompt = task.train_prompts()[0]
    assert prompt.info["answer"] == "\\frac12"
    assert task.reward(prompt, "\\boxed{\\frac12}") == 1.0
    assert task.reward(prompt, "#### \\frac12") == 0.0  # style=boxed ignores ####


def test_bad_files_and_keys_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        MathTask(path=str(tmp_path / "none.jsonl"))
    (tmp_path / "x.jsonl").write_text(json.dumps({"text": "no question here"}) + "\n")
    with pytest.raises(ConfigError, match="no row has a question"):
        MathTask(path=str(tmp_path / "x.jsonl"))
    with pytest.raises(ConfigError, match="task.style"):
        MathTask(style="latex")


def test_warmstart_has_near_misses():
    task = MathTask(warmstart_wrong_frac=0.5)
    pairs = task.warmstart_texts(random.Random(0), 400)
    by_text = {p.text: p for p in task.train_prompts()}
    right = sum(task.reward(by_text[q], s) for q, s in pairs)
    assert 120 < right < 280
    assert near_miss_solution("2+2=4\n#### 4", "4", random.Random(0)) in {
        "2+2=2\n#### 2", "2+2=3\n#### 3", "2+2=5\n#### 5", "2+2=6\n#### 6"}

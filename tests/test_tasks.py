"""The default expression task: scoring, answer sets, warm-start data; reward failures."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from rlx.tasks.base import Prompt, RewardStats, SingleTurnTask, safe_rewards
from rlx.tasks.expression import ExpressionTask, evaluate_expression, near_miss


@pytest.mark.parametrize("text,value", [("3*5+2", 17), ("9+8", 17), ("4*4", 16), ("0", 0), ("10", 10)])
def test_evaluate_well_formed(text, value):
    assert evaluate_expression(text) == value


@pytest.mark.parametrize("text", ["", "+", "3+", "03+1", "1+2+3+4", "3**2", "T=17", "3*5+2 ", "-1+18", "1/1"])
def test_evaluate_malformed_is_none(text):
    assert evaluate_expression(text) is None


def test_reward_right_wrong_malformed():
    task = ExpressionTask()
    prompt = Prompt("T=17:", {"target": 17})
    assert task.reward(prompt, "3*5+2") == 1.0
    assert task.reward(prompt, "9+8") == 1.0
    assert task.reward(prompt, "9+9") == 0.0
    assert task.reward(prompt, "9+") == 0.0
    assert task.reward(prompt, "*T=") == 0.0


def test_every_target_has_many_correct_answers_that_score_one():
    task = ExpressionTask()
    for target in task.train_targets + task.heldout_targets:
        answers = task.correct_answers(target)
        assert len(answers) >= 5, target
        prompt = Prompt(task.prompt_text(target), {"target": target})
        assert all(task.reward(prompt, a) == 1.0 for a in answers)


def test_heldout_targets_are_not_trained_on():
    task = ExpressionTask()
    train = {p.info["target"] for p in task.train_prompts()}
    heldout = {p.info["target"] for p in task.eval_prompts()["eval"]}
    assert not train & heldout


def test_warmstart_is_skewed_and_noisier_on_heldout_targets():
    task = ExpressionTask()
    pairs = task.warmstart_texts(random.Random(0), 20000)
    by_target: dict[str, Counter] = {}
    for prompt, completion in pairs:
        by_target.setdefault(prompt, Counter())[completion] += 1
    t17 = by_target["T=17:"]
    correct = [(count, c) for c, count in t17.items() if evaluate_expression(c) == 17]
    counts = sorted((n for n, _ in correct), reverse=True)
    assert counts[0] > 4 * counts[len(counts) // 2]  # a favourite, and a long tail
    correct_frac = lambda p, t: sum(n for c, n in by_target[p].items() if evaluate_expression(c) == t) / sum(by_target[p].values())  # noqa: E731
    assert 0.5 < correct_frac("T=17:", 17) < 0.7
    assert correct_frac("T=35:", 35) < 0.3


def test_near_miss_changes_one_operand():
    rng = random.Random(1)
    for _ in range(100):
        wrong = near_miss("3*5+2", rng)
        assert evaluate_expression(wrong) is not None and wrong != "3*5+2"


class Raising(SingleTurnTask):
    name = "raising"

    def reward(self, prompt, completion):
        if completion == "boom":
            raise RuntimeError("reward exploded")
        if completion == "nan":
            return float("nan")
        if completion == "text":
            return "not a number"
        return 1.0


def test_reward_that_raises_scores_zero_and_is_counted():
    stats = RewardStats()
    prompts = [Prompt("p")] * 4
    rewards = safe_rewards(Raising(), prompts, ["ok", "boom", "nan", "text"], stats)
    assert rewards == [1.0, 0.0, 0.0, 0.0]
    assert stats.errors == 3 and "reward exploded" in stats.first_error

"""The regime presets (experiment=off_policy, random_reward, hard_heldout, sequential_lost), the
expression task's reward options behind them, their named sweeps, and the pass@k estimator."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
from math import comb
from pathlib import Path

import pytest

from rlx.config import ConfigError
from rlx.metrics import pass_at_k
from rlx.sequential import phase_b_overrides, phase_config
from rlx.tasks.base import Prompt
from rlx.tasks.expression import ExpressionTask, evaluate_expression, expression_form

ROOT = Path(__file__).resolve().parents[1]


def train_prompt(task: ExpressionTask, target: int) -> Prompt:
    return next(p for p in task.train_prompts() if p.info["target"] == target)


# ----------------------------------------------------------------------------------- presets
def test_off_policy_preset_takes_many_steps_per_rollout(make_config):
    cfg = make_config("experiment=off_policy", "algorithm=grpo", debug=False)
    default = make_config("algorithm=grpo", debug=False)
    steps = cfg.algorithm.ppo_epochs * cfg.algorithm.num_minibatches
    assert steps > default.algorithm.ppo_epochs * default.algorithm.num_minibatches
    assert (cfg.algorithm.ppo_epochs, cfg.algorithm.num_minibatches) == (4, 8)
    assert cfg.task.prompts_per_step * cfg.algorithm.group_size % cfg.algorithm.num_minibatches == 0
    for algorithm in ("dapo", "adapo", "repo_r"):  # the preset applies on every base objective
        assert make_config("experiment=off_policy", f"algorithm={algorithm}", debug=False).algorithm.ppo_epochs == 4


def test_random_reward_preset_is_off_policy_with_a_random_reward(make_config):
    cfg = make_config("experiment=random_reward", "algorithm=grpo", debug=False)
    assert cfg.task.reward_mode == "random" and cfg.task.random_reward_p == 0.5
    assert (cfg.algorithm.ppo_epochs, cfg.algorithm.num_minibatches) == (4, 8)


def test_hard_heldout_preset(make_config):
    cfg = make_config("experiment=hard_heldout", debug=False)
    low, high = cfg.task.heldout_targets
    assert high - low + 1 >= 20
    assert cfg.eval.samples_per_prompt == 64 and list(cfg.eval.k) == [1, 8, 64]
    ExpressionTask(**{k: cfg.task[k] for k in ("heldout_targets", "heldout_wrong_frac", "heldout_warmstart_weight")})


def test_sequential_lost_phase_b_keeps_the_prompts_and_filters_answers(make_config):
    cfg = make_config("experiment=[sequential_lost,debug]", debug=False)
    a = phase_config(cfg, "A")
    b = phase_config(cfg, "B", phase_b_overrides(cfg), 5)
    assert list(b.task.train_targets) == list(a.task.train_targets)
    assert list(b.task.heldout_targets) == list(a.task.heldout_targets)
    assert a.task.exclude_top_answers == 0 and b.task.exclude_top_answers > 0
    assert a.logger.experiment_name == "sequential_lost"


def test_default_task_keys_keep_the_plain_task(make_config):
    cfg = make_config(debug=False)
    assert cfg.task.reward_mode == "answer" and cfg.task.answer_forms is None and cfg.task.exclude_top_answers == 0


# ----------------------------------------------------------------------------------- random reward
def test_random_reward_is_bernoulli_and_independent_of_the_answer():
    task = ExpressionTask(reward_mode="random", random_reward_p=0.3, random_reward_seed=7)
    prompt = train_prompt(task, 17)
    right, wrong, garbage = [[task.reward(prompt, c) for _ in range(4000)] for c in ("9+8", "9+9", "*T=")]
    for rewards in (right, wrong, garbage):
        assert set(rewards) == {0.0, 1.0}
        assert abs(sum(rewards) / len(rewards) - 0.3) < 0.03  # 4 standard errors
    assert right != wrong  # a fresh draw per call, not a fixed function of the answer
    again = ExpressionTask(reward_mode="random", random_reward_p=0.3, random_reward_seed=7)
    assert [again.reward(prompt, "9+8") for _ in range(4000)] == right  # deterministic within a run
    other = ExpressionTask(reward_mode="random", random_reward_p=0.3, random_reward_seed=8)
    assert [other.reward(prompt, "9+8") for _ in range(4000)] != right


@pytest.mark.parametrize("p,value", [(0.0, 0.0), (1.0, 1.0)])
def test_random_reward_extremes(p, value):
    task = ExpressionTask(reward_mode="random", random_reward_p=p)
    assert {task.reward(train_prompt(task, 17), c) for c in ("9+8", "9+9", "")} == {value}


def test_random_reward_leaves_evaluation_scoring_the_answer():
    task = ExpressionTask(reward_mode="random", random_reward_p=1.0)
    splits = task.eval_prompts()
    for prompts in splits.values():
        for prompt in prompts[:3]:
            answer = task.correct_answers(prompt.info["target"])[0]
            assert task.reward(prompt, answer) == 1.0 and task.reward(prompt, answer + "1") == 0.0
    assert {p.info["target"] for p in splits["eval_train"]} == set(task.train_targets)


# ----------------------------------------------------------------------------------- answer filters
@pytest.mark.parametrize("text,form", [("17", "number"), ("9+8", "sum"), ("4*4", "product"), ("3*5+2", "product_sum"),
                                       ("2+3*5", "sum_product"), ("1+2+3", "sum3"), ("2*2*2", "product3"),
                                       ("3*", None), ("03+1", None)])
def test_expression_form(text, form):
    assert expression_form(text) == form


def test_exclude_top_answers_rewards_only_answers_outside_the_favourites():
    plain = ExpressionTask()
    task = ExpressionTask(exclude_top_answers=3)
    prompt = train_prompt(task, 17)
    ranked = plain.correct_answers(17)
    assert task.correct_answers(17) == ranked  # same Zipf order: the warm-start is unchanged
    for favourite in ranked[:3]:
        assert plain.reward(prompt, favourite) == 1.0 and task.reward(prompt, favourite) == 0.0
    for other in ranked[3:]:
        assert task.reward(prompt, other) == 1.0 and task.reward(prompt, " " + other + " ") == 1.0
    for wrong in ("9+9", "3*5+3", "", "+"):
        assert task.reward(prompt, wrong) == 0.0


def test_answer_forms_rewards_only_those_forms():
    task = ExpressionTask(answer_forms=["product"])
    prompt = train_prompt(task, 16)
    assert task.reward(prompt, "4*4") == 1.0 and task.reward(prompt, "2*8") == 1.0
    assert task.reward(prompt, "8+8") == 0.0 and task.reward(prompt, "2*7+2") == 0.0 and task.reward(prompt, "16") == 0.0
    assert task.reward(prompt, "3*5") == 0.0  # a product, but wrong
    both = ExpressionTask(answer_forms=["sum", "product_sum"])
    assert both.reward(prompt, "8+8") == 1.0 and both.reward(prompt, "2*7+2") == 1.0 and both.reward(prompt, "4*4") == 0.0


def test_default_reward_is_the_answer_reward():
    task = ExpressionTask()
    for target in (5, 17, 30, 35):
        prompt = Prompt(task.prompt_text(target), {"target": target, "split": "train"})
        for text in list(task.correct_answers(target))[:5] + ["9+9", "17", "1+2*3", "", "T=1"]:
            assert task.reward(prompt, text) == float(evaluate_expression(text) == target)
    assert all(p.info["split"] == "train" for p in task.eval_prompts()["eval_train"])


@pytest.mark.parametrize("kwargs,key", [({"reward_mode": "noise"}, "reward_mode"), ({"random_reward_p": 1.5}, "random_reward_p"),
                                        ({"answer_forms": ["division"]}, "answer_forms"), ({"answer_forms": []}, "answer_forms"),
                                        ({"exclude_top_answers": -1}, "exclude_top_answers"),
                                        ({"heldout_warmstart_weight": -0.5}, "heldout_warmstart_weight")])
def test_bad_options_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=f"task.{key}"):
        ExpressionTask(**kwargs)


def test_heldout_warmstart_weight_sets_how_often_heldout_targets_are_seen():
    def heldout_share(weight: float) -> float:
        task = ExpressionTask(heldout_warmstart_weight=weight)
        held = {task.prompt_text(t) for t in task.heldout_targets}
        pairs = task.warmstart_texts(random.Random(0), 20000)
        return sum(prompt in held for prompt, _ in pairs) / len(pairs)

    assert heldout_share(0.0) == 0.0
    assert heldout_share(1.0) == pytest.approx(10 / 36, abs=0.02)  # uniform over the 36 targets
    assert heldout_share(0.1) == pytest.approx(1 / 27, abs=0.01)   # 10 x 0.1 of 26 + 10 x 0.1


# ----------------------------------------------------------------------------------- pass@k
@pytest.mark.parametrize("n,c", [(6, 0), (6, 1), (6, 2), (6, 5), (7, 3), (8, 8)])
def test_pass_at_k_is_the_unbiased_estimator(n, c):
    """Chen et al. 2021: pass@k = 1 - C(n-c, k)/C(n, k), the probability that k of the n samples
    drawn without replacement hold a correct one (checked by enumerating the k-subsets)."""
    samples = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(samples, k))
        exact = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
        assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)
    assert pass_at_k(64, 2, 1) == pytest.approx(2 / 64)  # pass@1 = c / n
    assert pass_at_k(64, 2, 64) == 1.0 and pass_at_k(64, 0, 64) == 0.0


# ----------------------------------------------------------------------------------- sweeps
@pytest.mark.parametrize("name,expected", [
    ("off_policy", ["experiment=off_policy", "algorithm=grpo,dapo,adapo,repo_r", "seed=0,1,2,3,4"]),
    ("random_reward", ["experiment=random_reward", "algorithm=grpo,dapo,adapo,repo_r"]),
    ("hard_heldout", ["experiment=hard_heldout", "--k 1 8 64"]),
    ("sequential_lost", ["experiment=sequential_lost", "--experiment sequential_lost"]),
])
def test_multirun_sh_regime_sweeps(name, expected):
    """The named sweeps' command lines (the train, compare and summary commands replaced by echo)."""
    env = {**os.environ, "RLX_TRAIN": "echo TRAIN", "RLX_COMPARE": "echo COMPARE", "RLX_PYTHON": "echo PY",
           "RLX_SWEEP_ID": "test-sweep"}
    result = subprocess.run(["bash", str(ROOT / "multirun.sh"), name, "trainer.max_steps=2"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "TRAIN --multirun" in result.stdout and "trainer.max_steps=2" in result.stdout
    for piece in expected:
        assert piece in result.stdout, (piece, result.stdout)

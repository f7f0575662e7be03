"""task=custom: a reward module written by the test, JSONL and parquet prompts, the per-sample
and batched (TRL) signatures, failures scored 0 and counted, and a short run of the real trainer."""

from __future__ import annotations

import json
import logging
import math
import random
import textwrap

import pytest
from mlflow.tracking import MlflowClient

from rlx.build import instantiate_task
from rlx.config import ConfigError
from rlx.tasks.base import Prompt, RewardStats, safe_rewards
from rlx.tasks.custom import CustomTask
from rlx.train import train

REWARDS = textwrap.dedent('''
    CALLS = []

    def exact(prompt, completion, answer=None, **info):
        CALLS.append(info)
        return float(completion.strip() == answer)

    def picky(prompt, completion, **info):
        if completion == "boom":
            raise RuntimeError("reward exploded")
        if completion == "text":
            return "1.0"
        if completion == "none":
            return None
        if completion == "nan":
            return float("nan")
        return 1

    def batched(prompts, completions, answer=None, level=None, **info):
        assert isinstance(prompts, list) and isinstance(answer, list) and len(answer) == len(prompts)
        return [float(c == a) + 0.5 * (lv == 2) for c, a, lv in zip(completions, answer, level)]

    def batched_bad(prompts, completions, **info):
        return [1.0, "x"] + [0.0] * (len(prompts) - 2)

    def batched_short(prompts, completions, **info):
        return [1.0]

    def batched_raises(prompts, completions, **info):
        raise ValueError("whole batch failed")
''')

ROWS = [{"prompt": f"{a}+{b}=", "answer": str(a + b), "level": 1 + (a % 2)} for a in range(10) for b in range(3)]


@pytest.fixture
def data(tmp_path, monkeypatch):
    """A reward module and a prompts file in a working directory, as a user would have them."""
    (tmp_path / "userrewards.py").write_text(REWARDS)
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_rows_become_prompts_with_their_other_fields_as_info(data):
    task = CustomTask("userrewards:exact", "prompts.jsonl", eval_fraction=0.2)
    prompts = task.train_prompts() + task.eval_prompts()["eval"]
    assert len(task.train_prompts()) == 24 and len(task.eval_prompts()["eval"]) == 6
    assert sorted(p.text for p in prompts) == sorted(r["prompt"] for r in ROWS)
    p = next(p for p in prompts if p.text == "3+2=")
    assert p.info["answer"] == "5" and p.info["level"] == 2
    assert task.reward(p, " 5") == 1.0 and task.reward(p, "6") == 0.0 and task.reward(p, "") == 0.0
    import userrewards

    assert userrewards.CALLS[-1] == {"level": 2}  # the answer is its own keyword, other fields in **info


def test_failures_score_zero_and_are_counted_with_a_warning(data, caplog):
    task = CustomTask("userrewards:picky", "prompts.jsonl")
    stats = RewardStats()
    with caplog.at_level(logging.WARNING):
        rewards = safe_rewards(task, [Prompt("p")] * 6, ["ok", "boom", "text", "none", "nan", "ok"], stats)
    assert rewards == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert stats.errors == 4 and "reward exploded" in stats.first_error
    assert any("reward exploded" in r.message for r in caplog.records)


def test_batched_signature_gets_lists(data):
    task = CustomTask("userrewards:batched", "prompts.jsonl", batched=True, eval_fraction=0)
    prompts = task.train_prompts()[:4]
    completions = [p.info["answer"] if i % 2 == 0 else "x" for i, p in enumerate(prompts)]
    rewards = safe_rewards(task, prompts, completions, RewardStats())
    expected = [float(i % 2 == 0) + 0.5 * (p.info["level"] == 2) for i, p in enumerate(prompts)]
    assert rewards == expected


@pytest.mark.parametrize("fn,errors,first", [("batched_bad", 1, "not a number"), ("batched_short", 4, "1 values"),
                                             ("batched_raises", 4, "whole batch failed")])
def test_batched_failures(data, fn, errors, first):
    task = CustomTask(f"userrewards:{fn}", "prompts.jsonl", batched=True)
    stats = RewardStats()
    rewards = safe_rewards(task, [Prompt("p")] * 4, ["a"] * 4, stats)
    assert stats.errors == errors and first in stats.first_error
    assert all(math.isfinite(r) for r in rewards) and (rewards[1] == 0.0)


def test_parquet_and_file_path_spec(data):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ROWS), data / "prompts.parquet")
    task = CustomTask(str(data / "userrewards.py") + ":exact", str(data / "prompts.parquet"), eval_fraction=0)
    assert len(task.train_prompts()) == 30
    p = task.train_prompts()[0]
    assert task.reward(p, p.info["answer"]) == 1.0


def test_alphabet_and_warmstart_from_answers_or_a_file(data):
    task = CustomTask("userrewards:exact", "prompts.jsonl")
    assert set(task.alphabet()) == set("0123456789+=")
    pairs = task.warmstart_texts(random.Random(0), 50)
    train_texts = {p.text: p.info["answer"] for p in task.train_prompts()}
    assert all(train_texts[p] == c for p, c in pairs)  # answers of training rows only
    (data / "ws.jsonl").write_text(json.dumps({"prompt": "1+1=", "completion": "two"}) + "\n")
    task = CustomTask("userrewards:exact", "prompts.jsonl", warmstart_file="ws.jsonl")
    assert task.warmstart_texts(random.Random(0), 2) == [("1+1=", "two")] * 2 and {"t", "w", "o"} <= set(task.alphabet())
    (data / "noanswers.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    bare = CustomTask("userrewards:picky", "noanswers.jsonl", eval_fraction=0)
    with pytest.raises(ConfigError, match="needs warm-start data"):
        bare.warmstart_texts(random.Random(0), 1)


@pytest.mark.parametrize("overrides,message", [
    ([], "task=custom needs task.reward_fn"),
    (["task.reward_fn=userrewards:exact", "task.prompts=missing.jsonl"], "task.prompts='missing.jsonl': no such file"),
    (["task.reward_fn=userrewards", "task.prompts=prompts.jsonl"], "expected 'package.module:function'"),
    (["task.reward_fn=nosuchmodule:f", "task.prompts=prompts.jsonl"], "cannot import 'nosuchmodule'"),
    (["task.reward_fn=userrewards:nosuch", "task.prompts=prompts.jsonl"], "has no attribute 'nosuch'"),
    (["task.reward_fn=userrewards:CALLS", "task.prompts=prompts.jsonl"], "is not callable"),
])
def test_config_errors_are_one_clear_line(data, make_config, overrides, message):
    cfg = make_config("task=custom", *overrides)
    with pytest.raises(ConfigError, match=message) as info:
        instantiate_task(cfg.task)
    assert "\n" not in str(info.value)


def test_rows_without_prompt_are_refused(data):
    (data / "bad.jsonl").write_text(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(ConfigError, match="row 0 has no text field 'prompt'"):
        CustomTask("userrewards:exact", "bad.jsonl")
    (data / "bad2.jsonl").write_text("{not json\n")
    with pytest.raises(ConfigError, match="line 1 is not JSON"):
        CustomTask("userrewards:exact", "bad2.jsonl")


@pytest.mark.slow
def test_custom_task_trains_end_to_end(data, make_config, store):
    cfg = make_config("task=custom", "task.reward_fn=userrewards:picky", "task.prompts=prompts.jsonl",
                      "task.warmstart.steps=60", "task.warmstart.batch_size=32", "run_name=custom-e2e")
    final = train(cfg)
    assert math.isfinite(final["train/entropy"])
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("custom").experiment_id],
                             "attributes.run_name = 'custom-e2e'")[0]
    assert run.info.status == "FINISHED"
    errors = client.get_metric_history(run.info.run_id, "train/reward_errors")
    assert [m.step for m in sorted(errors, key=lambda m: m.step)] == [0, 1, 2]
    assert run.data.params["task.reward_fn"] == "userrewards:picky"
    assert "eval/pass_at_1" in run.data.metrics and "eval_train/pass_at_1" in run.data.metrics

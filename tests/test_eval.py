"""rlx-eval: the split metrics against hand computation, and real evaluations of a trained
checkpoint, the base policy and a save_pretrained directory on a multi-turn task, in MLflow."""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient

from rlx.eval import main, split_arguments
from rlx.evaluation import split_metrics
from rlx.metrics import pass_at_k
from rlx.models import build_model, char_tokenizer
from rlx.tasks.toolworld import ALPHABET
from rlx.train import train


def test_split_metrics_by_hand():
    # two prompts x 4 samples: prompt 0 has 2 correct ("a", "a" -> 1 distinct), prompt 1 has 3 ("x", "y", "y")
    rewards = [1.0, 0.0, 1.0, 0.5, 1.0, 1.0, 0.0, 1.0]
    completions = ["a", "b", "a ", "c", "x", "y", "z", "y"]
    out = split_metrics(rewards, completions, n=4, ks=[1, 2, 4], answer_key=str.strip)
    assert "pass_at_k/01" not in out and "pass_at_k/1" not in out  # pass@1 is pass_at_1, one name
    assert out["pass_at_k/02"] == pytest.approx((pass_at_k(4, 2, 2) + pass_at_k(4, 3, 2)) / 2)
    assert out["pass_at_k/02"] == pytest.approx(((1 - 1 / 6) + 1.0) / 2)
    assert out["pass_at_k/04"] == 1.0
    assert out["pass_at_1"] == pytest.approx(5 / 8) == pytest.approx((2 / 4 + 3 / 4) / 2)
    assert out["distinct_correct"] == pytest.approx((1 + 2) / 2)
    assert out["reward_mean"] == pytest.approx(5.5 / 8)
    with pytest.raises(ValueError):
        split_metrics([1.0] * 3, ["a"] * 3, n=2, ks=[1], answer_key=str)


def test_arguments():
    assert split_arguments(["checkpoint=a.ckpt", "task=math", "base=dir", "eval.k=[1,2]"]) == (
        "a.ckpt", "dir", ["task=math", "eval.k=[1,2]"])


def store_overrides(store, cache_dir):
    return [f"logger.tracking_uri=sqlite:///{store}/mlflow.db", f"logger.artifact_location={store}/artifacts",
            f"checkpoint.dir={store}/checkpoints", f"cache_dir={cache_dir}", "experiment=debug"]


def eval_runs(store, experiment):
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], "tags.kind = 'eval'",
                                      order_by=["attributes.start_time DESC"])


@pytest.mark.slow
def test_eval_of_a_trained_checkpoint_and_of_the_base(make_config, store, cache_dir, capsys):
    cfg = make_config("algorithm=grpo", "run_name=to-evaluate")
    train(cfg)
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("expression").experiment_id],
                             "attributes.run_name = 'to-evaluate'")[0]
    ckpt = f"{store}/checkpoints/{run.info.run_id}/last.ckpt"
    main([f"checkpoint={ckpt}", *store_overrides(store, cache_dir), "eval.samples_per_prompt=8", "eval.k=[1,2,8]"])
    assert "eval/pass_at_k/08" in capsys.readouterr().out
    client, runs = eval_runs(store, "expression")
    latest = runs[0]
    assert latest.info.status == "FINISHED" and latest.data.tags["checkpoint"] == ckpt
    metrics = latest.data.metrics
    for split in ("eval", "eval_train"):
        for key in ("pass_at_k/02", "pass_at_k/08", "pass_at_1", "distinct_correct", "reward_mean",
                    "entropy"):
            assert math.isfinite(metrics[f"{split}/{key}"]), (split, key)
        assert metrics[f"{split}/pass_at_1"] <= metrics[f"{split}/pass_at_k/02"] <= metrics[f"{split}/pass_at_k/08"]
        assert metrics[f"{split}/entropy"] > 0
    assert {a.path for a in client.list_artifacts(latest.info.run_id)} == {"generations"}
    main(["checkpoint=base", *store_overrides(store, cache_dir), "eval.samples_per_prompt=4", "run_name=base-eval"])
    _, runs = eval_runs(store, "expression")
    assert runs[0].info.run_name == "base-eval" and runs[0].data.tags["checkpoint"] == "base policy"


def test_eval_of_a_pretrained_directory_on_the_tool_world(make_config, store, cache_dir, tmp_path):
    tokenizer = char_tokenizer(ALPHABET)
    model = build_model(make_config().model, tokenizer, seed=0)
    model.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    main([f"checkpoint={tmp_path / 'policy'}", *store_overrides(store, cache_dir), "task=toolworld",
          "task.n_train=4", "task.n_eval=2", "task.eval_train_size=2", "task.max_turns=2", "task.max_turn_tokens=16",
          "eval.samples_per_prompt=2", "eval.k=[1,2]"])
    _, runs = eval_runs(store, "toolworld")
    metrics = runs[0].data.metrics
    assert metrics["eval/pass_at_1"] == 0.0 and metrics["eval/reward_mean"] == 0.0  # random text never answers
    assert metrics["eval/entropy"] > 2.0  # near-uniform over ~50 symbols


def test_bad_checkpoint_is_one_line(store, cache_dir, capsys):
    with pytest.raises(SystemExit) as info:
        main(["checkpoint=/nonexistent.ckpt", *store_overrides(store, cache_dir)])
    assert info.value.code == 2 and "no such file or directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["task=expression"])

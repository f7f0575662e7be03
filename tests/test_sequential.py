"""experiment=sequential: phase A then phase B from A's checkpoint, one parent MLflow run with
two nested child runs and the phase-B trainability summaries (real trainer, model and store)."""

from __future__ import annotations

import math

import pytest
import torch
from mlflow.tracking import MlflowClient

from rlx.build import policy_state
from rlx.config import ConfigError
from rlx.sequential import PHASE_TAG, first_last_gain, phase_b_overrides, phase_config, trainability
from rlx.train import train


def test_trainability_formulas():
    curve = [0.1, 0.2, 0.3, 0.5, 0.9]
    out = trainability(curve, n=4, window=2)
    assert out["b_reward_start"] == pytest.approx(0.15)
    assert out["b_reward_at_n"] == pytest.approx(0.4)
    assert out["b_reward_gain"] == pytest.approx(0.25)
    assert out["b_reward_auc"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.5) / 4)
    assert out["b_reward_auc_gain"] == pytest.approx(0.275 - 0.15)
    assert trainability(curve, n=50, window=1)["b_reward_gain"] == pytest.approx(0.8)  # N clipped to the curve
    assert trainability([], n=5, window=2) == {}
    assert first_last_gain([(3, 0.5), (0, 0.25)]) == 0.25 and math.isnan(first_last_gain([(0, 1.0)]))


def test_phase_configs(make_config):
    cfg = make_config("experiment=[sequential,debug]", "trainer.max_steps=6", "checkpoint.every=4", debug=False)
    a = phase_config(cfg, "A")
    b = phase_config(cfg, "B", phase_b_overrides(cfg), 5)
    assert "sequential" not in a and "sequential" not in b
    assert a.checkpoint.every == 2 and a.trainer.max_steps == 6  # a divisor: last.ckpt is the final policy
    assert b.trainer.max_steps == 5 and list(b.task.train_targets) == [31, 40] and list(a.task.train_targets) == [5, 30]
    assert a.logger.experiment_name == b.logger.experiment_name == "sequential"
    assert a.run_name == f"{cfg.algorithm.name}-seed0/A"
    unknown = make_config("experiment=[sequential,debug]", "task=math", debug=False)
    with pytest.raises(ConfigError, match="sequential.phase_b has no entry for task 'math'"):
        phase_b_overrides(unknown)


@pytest.mark.slow
def test_sequential_run_produces_both_phases_under_one_parent(make_config, store):
    cfg = make_config("experiment=[sequential,debug]", "algorithm=grpo", "trainer.max_steps=2",
                      "sequential.phase_b_steps=2", "sequential.gain_after=2", "sequential.window=1",
                      "run_name=seq", "sweep_id=seq-test", debug=False)
    final = train(cfg)
    assert "sequential/b_reward_gain" in final and "sequential/b_reward_auc" in final
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("sequential")
    runs = {r.data.tags[PHASE_TAG]: r for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get("sweep_id") == "seq-test"}
    assert set(runs) == {"parent", "A", "B"}
    parent, a, b = runs["parent"], runs["A"], runs["B"]
    assert all(r.info.status == "FINISHED" for r in runs.values())
    for child in (a, b):
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/reward_mean")]
        assert steps == [0, 1]
    assert a.data.params["task.train_targets"] == "[5, 30]" and b.data.params["task.train_targets"] == "[31, 40]"
    assert b.data.tags["base_policy"] == a.data.tags["base_policy"]  # phase B builds on A's base, no new warm-start
    for key in ("sequential/b_reward_gain", "sequential/b_reward_auc", "sequential/b_reward_start",
                "sequential/a_entropy_change_pct", "sequential/b_eval_train_pass_at_1_gain",
                "sequential/b_distinct_correct_end"):
        assert key in parent.data.metrics, key
    rewards = sorted(client.get_metric_history(b.info.run_id, "train/reward_mean"), key=lambda m: m.step)
    assert parent.data.metrics["sequential/b_reward_gain"] == pytest.approx(rewards[1].value - rewards[0].value)
    # phase B started from A's final weights, not from the base policy
    ckpt_a = b.data.tags["init_checkpoint"]
    assert ckpt_a.endswith(f"{a.info.run_id}/last.ckpt")
    assert torch.load(ckpt_a, map_location="cpu", weights_only=False)["epoch"] == 1
    from rlx.models import load_pretrained

    base, _ = load_pretrained(a.data.tags["base_policy"])
    a_weights = policy_state(ckpt_a)
    assert any(not torch.equal(a_weights[k], v) for k, v in base.state_dict().items() if k in a_weights)


def test_summary_table_means_per_algorithm():
    from rlx.sequential import summary_table

    rows = [("grpo", {"sequential/b_reward_gain": 0.2}), ("grpo", {"sequential/b_reward_gain": 0.4}),
            ("repo_r", {"sequential/b_reward_gain": 0.5, "sequential/b_reward_auc": 0.7})]
    table = summary_table(rows).splitlines()
    assert table[0].startswith("| algorithm | runs | b_reward_start | b_reward_gain |")
    assert table[2].startswith("| grpo | 2 | - | +0.300 |") and table[3].startswith("| repo_r | 1 | - | +0.500 | +0.700 |")

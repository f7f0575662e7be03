"""End-to-end: the real trainer (Lightning), the real HF model and a real MLflow sqlite store."""

from __future__ import annotations

import math

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from rlx.config import CONF_DIR
from rlx.train import train

pytestmark = pytest.mark.slow

ALGORITHMS = sorted(p.stem for p in (CONF_DIR / "algorithm").glob("*.yaml"))

EVERY_ITERATION = [
    "train/reward_mean", "train/entropy", "train/entropy_sampled", "train/entropy_change_pct",
    "train/entropy_cumulative", "train/clipfrac_low", "train/clipfrac_high", "train/kl_ref",
    "train/response_length", "train/entropy_pred_delta", "train/entropy_meas_delta",
    "time/rollout_s", "time/update_s", "perf/tokens_per_s",
]
AT_EVAL = ["eval/pass_at_1", "eval/pass_at_k/04", "eval/distinct_correct",
           "eval_train/pass_at_1", "eval_train/distinct_correct"]
CONTROL = {"repo_r": "control/zeta", "repo_d": "control/zeta", "adapo": "control/eps_high",
           "adaptive_entropy": "control/entropy_coef"}


def only_run(store, experiment: str = "expression"):
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              order_by=["attributes.start_time DESC"])
    return client, runs


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_runs_and_logs_its_metrics(make_config, store, algorithm):
    cfg = make_config(f"algorithm={algorithm}", f"run_name=e2e-{algorithm}")
    final = train(cfg)
    assert math.isfinite(final["train/entropy"])
    client, runs = only_run(store)
    run = next(r for r in runs if r.info.run_name == f"e2e-{algorithm}")
    assert run.info.status == "FINISHED"
    assert run.data.params["algorithm.name"] == algorithm
    assert run.data.tags["algorithm"] == algorithm
    for key in EVERY_ITERATION + ([CONTROL[algorithm]] if algorithm in CONTROL else []):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == [0, 1, 2], (key, steps)
    for key in AT_EVAL:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == [0, 2, 3], (key, steps)  # first, eval_every=2, and after the last iteration
    entropy = sorted(client.get_metric_history(run.info.run_id, "train/entropy"), key=lambda m: m.step)
    assert run.data.metrics["train/entropy_change_pct"] == pytest.approx(
        100 * (entropy[-1].value / entropy[0].value - 1), rel=1e-6)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "generations", "plots"} <= artifacts
    config_text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config/resolved.yaml")
    assert f"name: {algorithm}" in config_text


def test_clipping_acts_with_several_minibatches(make_config, store):
    """With ppo_epochs x minibatches > 1 the ratio leaves 1 and the clip binds on some tokens."""
    cfg = make_config("algorithm=grpo", "optim.lr=3e-3", "algorithm.ppo_epochs=4", "algorithm.num_minibatches=4",
                      "run_name=clip-acts")
    train(cfg)
    client, runs = only_run(store)
    run = next(r for r in runs if r.info.run_name == "clip-acts")
    clipped = [m.value for k in ("train/clipfrac_low", "train/clipfrac_high")
               for m in client.get_metric_history(run.info.run_id, k)]
    assert max(clipped) > 0


def test_resume_continues_the_same_run_and_matches_an_uninterrupted_one(make_config, store):
    common = ["algorithm=repo_r", "trainer.max_steps=4", "checkpoint.every=1"]
    straight = train(make_config(*common, "run_name=straight"))
    first = make_config(*common[:1], "trainer.max_steps=2", "checkpoint.every=1", "run_name=interrupted")
    train(first)
    client, runs = only_run(store)
    interrupted = next(r for r in runs if r.info.run_name == "interrupted")
    resumed = train(make_config(*common, "resume=last"))
    client, runs = only_run(store)
    assert not [r for r in runs if r.info.run_name is None or r.info.run_name == "" ]
    history = client.get_metric_history(interrupted.info.run_id, "train/reward_mean")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]  # the same MLflow run continued
    for key in ("control/zeta", "train/entropy", "train/reward_mean", "train/entropy_cumulative"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-5), key


def test_nonfinite_loss_skips_the_step_and_then_fails_cleanly(make_config, store):
    from rlx.build import instantiate_task, task_identity
    from rlx.learner import Learner
    from rlx.learner.guards import RunStopped
    from rlx.warmstart import base_policy

    cfg = make_config("algorithm=grpo", "monitor.entropy_dynamics=false")
    task = instantiate_task(cfg.task)
    policy, tokenizer, _ = base_policy(task, task_identity(cfg.task), cfg.model, cfg.task.warmstart, cfg.cache_dir)
    learner = Learner(policy, tokenizer, task, cfg)
    optimizer = torch.optim.SGD(learner.policy.parameters(), lr=0.1)
    before = [p.detach().clone() for p in learner.policy.parameters()]
    rollout, _ = learner.collect(0)
    rollout.extras["advantages"] = torch.full_like(rollout.extras["advantages"], float("nan"))
    for iteration in range(2):
        metrics = learner.train_on(rollout, optimizer, iteration)
        assert metrics["train/optimizer_steps"] == 0 and metrics["train/nonfinite_skips"] > 0
        learner.guards.check(metrics, iteration)
    assert learner.guards.nonfinite.streak == 2
    assert all(torch.equal(a, b) for a, b in zip(before, learner.policy.parameters()))
    with pytest.raises(RunStopped, match="NaN/inf in every optimizer step.*last checkpoint"):
        learner.guards.check(learner.train_on(rollout, optimizer, 2), 2)

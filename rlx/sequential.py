"""`experiment=sequential`: RL on task A, then RL on a new task B from A's last checkpoint.

The paper's second claim: a policy whose entropy collapsed on A can no longer learn B, while an
entropy-preserved one keeps learning. One parent MLflow run holds two nested child runs
(tag mlflow.parentRunId): phase A (the configured task, trainer.max_steps iterations) and
phase B (the task with `sequential.phase_b.<task name>` merged over it, sequential.phase_b_steps
iterations). Phase B starts from the policy weights of A's last checkpoint with a fresh
optimizer and fresh controllers (their target is B's own initial entropy): a new RL run
launched from A's checkpoint. Its base policy (architecture, tokenizer) is A's.

Phase-B trainability, logged on the parent (r_t = phase B's train/reward_mean at iteration t,
N = min(sequential.gain_after, iterations run), w = sequential.window):
    sequential/b_reward_start     mean(r_0 .. r_{w-1})
    sequential/b_reward_at_n      mean(r_{N-w} .. r_{N-1})
    sequential/b_reward_gain      b_reward_at_n - b_reward_start          (reward gain after N)
    sequential/b_reward_auc       (1/N) sum_{t<N} r_t                      (area under the curve)
    sequential/b_reward_auc_gain  b_reward_auc - b_reward_start           (area above the start)
    sequential/b_eval_train_pass_at_1_gain, sequential/b_eval_pass_at_1_gain
                                  last minus first evaluation of phase B
    sequential/b_distinct_correct_end  distinct correct answers per training prompt at B's last evaluation
    sequential/a_entropy_change_pct, sequential/b_entropy_change_pct   each phase's final entropy change
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from rlx.build import sweep_id_of
from rlx.config import ConfigError
from rlx.run import run_rl
from rlx.tracking import run_tags

PHASE_TAG = "sequential_phase"


# ----------------------------------------------------------------------------------- summaries
def window_mean(curve: Sequence[float], start: int, stop: int) -> float:
    """mean(curve[start:stop]) (nan when empty)."""
    part = list(curve[max(0, start):stop])
    return sum(part) / len(part) if part else float("nan")


def trainability(curve: Sequence[float], n: int, window: int) -> dict[str, float]:
    """Reward gain after N iterations and area under the reward curve (see the module docstring)."""
    n = min(n, len(curve))
    if n == 0:
        return {}
    w = max(1, min(window, n))
    start = window_mean(curve, 0, w)
    at_n = window_mean(curve, n - w, n)
    auc = window_mean(curve, 0, n)
    return {"b_reward_start": start, "b_reward_at_n": at_n, "b_reward_gain": at_n - start,
            "b_reward_auc": auc, "b_reward_auc_gain": auc - start}


def first_last_gain(history: Sequence[tuple[int, float]]) -> float:
    """value at the last step minus value at the first step (nan with fewer than two points)."""
    if len(history) < 2:
        return float("nan")
    ordered = sorted(history)
    return ordered[-1][1] - ordered[0][1]


# ----------------------------------------------------------------------------------- configs
def phase_b_overrides(cfg: DictConfig) -> dict:
    """sequential.phase_b.<task name>: the task keys phase B changes."""
    table = cfg.sequential.phase_b or {}
    name = str(cfg.task.name)
    if name not in table:
        raise ConfigError(f"sequential.phase_b has no entry for task {name!r} (have {sorted(table)}); add one, e.g. "
                          f"'+sequential.phase_b.{name}={{key: value}}' naming the task keys phase B changes")
    return OmegaConf.to_container(table[name], resolve=True) or {}


def phase_config(cfg: DictConfig, phase: str, task_overrides: dict | None = None,
                 steps: int | None = None) -> DictConfig:
    """A copy of cfg for one phase: no `sequential` node, task keys overridden, its own length,
    run name <name>/<phase>; phase A checkpoints at a divisor of its length, so last.ckpt is
    the final policy."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(out):
        del out["sequential"]
        if task_overrides:
            out.task = OmegaConf.merge(out.task, task_overrides)
        if steps is not None:
            out.trainer.max_steps = int(steps)
        out.logger.experiment_name = str(cfg.logger.experiment_name)
        out.run_name = f"{run_name(cfg)}/{phase}"
        out.checkpoint.every = math.gcd(int(out.checkpoint.every), int(out.trainer.max_steps))
    return out


def run_name(cfg: DictConfig) -> str:
    return str(cfg.run_name) if cfg.run_name else f"{cfg.algorithm.name}-seed{cfg.seed}"


# ----------------------------------------------------------------------------------- MLflow
def child_run(client, experiment_id: str, parent_id: str, phase: str):
    runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                                               f"tags.{PHASE_TAG} = '{phase}'")
    if not runs:
        raise RuntimeError(f"sequential: phase {phase} left no MLflow run under parent {parent_id}")
    return runs[0]


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def phase_summary(client, run_a, run_b, n: int, window: int) -> dict[str, float]:
    """The parent's sequential/... metrics from the two child runs."""
    rewards = [v for _, v in sorted(history(client, run_b.info.run_id, "train/reward_mean"))]
    out = trainability(rewards, n, window)
    for split in ("eval_train", "eval"):
        out[f"b_{split}_pass_at_1_gain"] = first_last_gain(history(client, run_b.info.run_id, f"{split}/pass_at_1"))
    distinct = sorted(history(client, run_b.info.run_id, "eval_train/distinct_correct"))
    if distinct:
        out["b_distinct_correct_end"] = distinct[-1][1]
    for phase, run in (("a", run_a), ("b", run_b)):
        change = run.data.metrics.get("train/entropy_change_pct")
        if change is not None:
            out[f"{phase}_entropy_change_pct"] = change
    return {f"sequential/{k}": v for k, v in out.items() if v is not None and math.isfinite(v)}


def open_parent(cfg: DictConfig, tags: dict[str, str]):
    """(client, experiment id, parent run id): a new parent run in the configured experiment."""
    from mlflow.tracking import MlflowClient

    from rlx.store import ensure_experiment
    from rlx.tracking import config_params, local_artifact_location

    uri = cfg.logger.tracking_uri
    experiment_id = ensure_experiment(uri, str(cfg.logger.experiment_name),
                                      local_artifact_location(uri, cfg.logger.artifact_location))
    client = MlflowClient(uri)
    parent = client.create_run(experiment_id, run_name=run_name(cfg), tags={**tags, PHASE_TAG: "parent"})
    params = config_params(cfg)
    for key, value in params.items():
        client.log_param(parent.info.run_id, key, value)
    client.log_text(parent.info.run_id, OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
    return client, experiment_id, parent.info.run_id


def run_sequential(cfg: DictConfig) -> dict[str, float]:
    """Phase A, then phase B from A's last checkpoint, under one parent run; returns phase B's
    last metrics with the sequential/ summaries."""
    if cfg.resume:
        raise ConfigError(f"resume={cfg.resume!r}: experiment=sequential cannot resume; rerun it")
    seq = cfg.sequential
    cfg_a = phase_config(cfg, "A")
    cfg_b = phase_config(cfg, "B", phase_b_overrides(cfg), int(seq.phase_b_steps))
    client, experiment_id, parent_id = open_parent(cfg, run_tags(cfg, sweep_id_of(cfg)))
    try:
        run_rl(cfg_a, extra_tags={"mlflow.parentRunId": parent_id, PHASE_TAG: "A"})
        run_a = child_run(client, experiment_id, parent_id, "A")
        checkpoint = Path(cfg_a.checkpoint.dir) / run_a.info.run_id / "last.ckpt"
        final_b = run_rl(cfg_b, init_checkpoint=checkpoint, base_task_cfg=cfg_a.task,
                        extra_tags={"mlflow.parentRunId": parent_id, PHASE_TAG: "B",
                                    "init_checkpoint": str(checkpoint)})
        run_b = child_run(client, experiment_id, parent_id, "B")
        summary = phase_summary(client, run_a, run_b, int(seq.gain_after), int(seq.window))
        for key, value in summary.items():
            client.log_metric(parent_id, key, value, step=0)
        client.set_terminated(parent_id, "FINISHED")
    except BaseException:
        client.set_terminated(parent_id, "FAILED")
        raise
    print("sequential: phase-B trainability " + ", ".join(f"{k.split('/')[1]}={v:.3f}" for k, v in summary.items()))
    return {**final_b, **summary}


# ----------------------------------------------------------------------------------- sweep table
SUMMARY_COLUMNS = ("b_reward_start", "b_reward_gain", "b_reward_auc", "b_reward_auc_gain",
                   "b_eval_train_pass_at_1_gain", "b_distinct_correct_end", "a_entropy_change_pct",
                   "b_entropy_change_pct")


def summary_table(rows: Sequence[tuple[str, dict[str, float]]]) -> str:
    """A Markdown table: one line per algorithm, each column the mean over its runs (seeds)."""
    groups: dict[str, list[dict[str, float]]] = {}
    for algorithm, metrics in rows:
        groups.setdefault(algorithm, []).append(metrics)
    lines = ["| algorithm | runs | " + " | ".join(SUMMARY_COLUMNS) + " |",
             "|---|---|" + "---|" * len(SUMMARY_COLUMNS)]
    for algorithm in sorted(groups):
        cells = []
        for column in SUMMARY_COLUMNS:
            values = [m[f"sequential/{column}"] for m in groups[algorithm] if f"sequential/{column}" in m]
            cells.append(f"{sum(values) / len(values):+.3f}" if values else "-")
        lines.append(f"| {algorithm} | {len(groups[algorithm])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """python -m rlx.sequential --sweep-id ID [--tracking-uri URI] [--experiment NAME]: the phase-B
    trainability table of a finished sequential sweep (its parent runs)."""
    import argparse
    import sys

    from mlflow.tracking import MlflowClient

    parser = argparse.ArgumentParser(prog="python -m rlx.sequential", description=main.__doc__)
    parser.add_argument("--sweep-id", required=True)
    parser.add_argument("--tracking-uri", default="sqlite:///outputs/mlflow.db")
    parser.add_argument("--experiment", default="sequential")
    args = parser.parse_args(argv)
    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        print(f"no experiment {args.experiment!r} in {args.tracking_uri}", file=sys.stderr)
        sys.exit(1)
    parents = client.search_runs([experiment.experiment_id], f"tags.sweep_id = '{args.sweep_id}' and "
                                                             f"tags.{PHASE_TAG} = 'parent'")
    if not parents:
        print(f"no sequential runs with sweep_id {args.sweep_id!r}", file=sys.stderr)
        sys.exit(1)
    rows = [(r.data.tags.get("algorithm", "?"), r.data.metrics) for r in parents if r.info.status == "FINISHED"]
    print(f"phase-B trainability, sweep {args.sweep_id} ({len(rows)} finished of {len(parents)} runs):")
    print(summary_table(rows))


if __name__ == "__main__":
    main()

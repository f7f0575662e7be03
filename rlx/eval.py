"""`rlx-eval`: evaluate a checkpoint on a task's evaluation splits and log it to MLflow.

    rlx-eval checkpoint=outputs/checkpoints/<run id>/last.ckpt
    rlx-eval checkpoint=outputs/checkpoints/<run id>/last.ckpt task=expression eval.k=[1,4,16,64] \\
             eval.samples_per_prompt=64
    rlx-eval checkpoint=base task=toolworld          # the task's base policy (warm-start or pretrained)
    rlx-eval checkpoint=outputs/cache/expression-<key>  # any save_pretrained directory

Every other argument is a Hydra override of the training config (conf/config.yaml), so the
task, model, rollout and eval keys mean what they mean for rlx-train. A Lightning checkpoint
(.ckpt) holds weights only: its architecture and tokenizer come from `base=<directory>`, else
from the `base_policy` tag of the MLflow run that wrote it (found through the checkpoint's run
id in logger.tracking_uri), else from the config's own base policy.

Per split (e.g. eval = held-out, eval_train = training prompts), with n = eval.samples_per_prompt
samples per prompt: pass@k for each k in eval.k (unbiased: 1 - C(n-c, k) / C(n, k), averaged
over prompts), pass@1 (fraction of correct samples), distinct correct answers per prompt,
mean reward, and the mean exact token entropy (fp32, over the policy's tokens). A sample is
correct when its reward reaches 1. Logged as `<split>/...` metrics of a new MLflow run in the
task's experiment, tagged kind=eval, with the samples as an artifact.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig

from rlx.build import compose, instantiate_task, policy_from_checkpoint, quiet_libraries, task_identity
from rlx.config import ConfigError, validate
from rlx.evaluation import evaluate
from rlx.learner.sampling import PolicySampler
from rlx.learner.token_stats import ForwardSettings

USAGE = "usage: rlx-eval checkpoint=<last.ckpt | save_pretrained dir | base> [base=<dir>] [Hydra overrides]"


def load_for_eval(cfg: DictConfig, task, checkpoint: str, base: str | None):
    """(policy, tokenizer, description, architecture directory) for `checkpoint`: "base", a
    save_pretrained directory or a .ckpt file (architecture from `base`, the run's base_policy
    tag, or the config's base)."""
    from rlx.models import load_pretrained
    from rlx.warmstart import base_policy

    def config_base():
        return base_policy(task, task_identity(cfg.task), cfg.model, cfg.task.warmstart, cfg.cache_dir)

    if checkpoint == "base":
        policy, tokenizer, base_dir = config_base()
        return policy, tokenizer, "base policy", str(base_dir)
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        policy, tokenizer = load_pretrained(str(path))
        return policy, tokenizer, str(path), str(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint={checkpoint!r}: no such file or directory")
    policy, tokenizer, base_dir = policy_from_checkpoint(cfg, task, path, base)
    return policy, tokenizer, str(path), base_dir


# ----------------------------------------------------------------------------------- evaluation
def evaluate_policy(policy, tokenizer, task, cfg: DictConfig, engine=None) -> tuple[dict[str, float], str]:
    """Metrics `<split>/...` (entropy included) over every evaluation split, and the samples as TSV:
    the same sampler, sampler dtype and rollout engine as training (rlx.evaluation.evaluate)."""
    policy.eval()
    torch.manual_seed(cfg.seed)
    sampler = PolicySampler(policy, tokenizer, task, cfg, engine)
    return evaluate(sampler, task, cfg.eval, cfg.logger.log_generations, ForwardSettings.from_config(cfg))


# ----------------------------------------------------------------------------------- entry point
def split_arguments(argv: Sequence[str]) -> tuple[str | None, str | None, list[str]]:
    """(checkpoint, base, Hydra overrides) from `key=value` arguments."""
    checkpoint = base = None
    overrides = []
    for arg in argv:
        if arg.startswith("checkpoint="):
            checkpoint = arg.split("=", 1)[1]
        elif arg.startswith("base="):
            base = arg.split("=", 1)[1]
        else:
            overrides.append(arg)
    return checkpoint, base, overrides


def log_to_mlflow(cfg: DictConfig, checkpoint: str, described: str, metrics: dict[str, float],
                  samples: str) -> str:
    """A new run in the task's experiment: params (checkpoint, task, eval keys), metrics, samples."""
    from mlflow.tracking import MlflowClient

    from rlx.store import ensure_experiment
    from rlx.tracking import local_artifact_location

    uri = cfg.logger.tracking_uri
    experiment_id = ensure_experiment(uri, cfg.logger.experiment_name,
                                      local_artifact_location(uri, cfg.logger.artifact_location))
    client = MlflowClient(uri)
    run = client.create_run(experiment_id, run_name=cfg.run_name or f"eval-{Path(checkpoint).name}",
                            tags={"kind": "eval", "task": str(cfg.task.name), "checkpoint": described,
                                  "model": str(cfg.model.name)})
    run_id = run.info.run_id
    params = {"checkpoint": described, "task.name": cfg.task.name, "eval.samples_per_prompt":
              cfg.eval.samples_per_prompt, "eval.k": list(cfg.eval.k), "rollout.temperature": cfg.rollout.temperature,
              "rollout.max_new_tokens": cfg.rollout.max_new_tokens, "seed": cfg.seed}
    for key, value in params.items():
        client.log_param(run_id, key, str(value))
    for key, value in metrics.items():
        if math.isfinite(value):
            client.log_metric(run_id, key, value, step=0)
    client.log_text(run_id, samples, "generations/eval.tsv")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def run_eval(checkpoint: str, base: str | None, overrides: Sequence[str]) -> dict[str, float]:
    """Compose, load, evaluate, log; returns the metrics."""
    cfg = compose(overrides)
    checked = validate(cfg)
    cfg = cfg if checked is None else checked
    quiet_libraries()
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    task = instantiate_task(cfg.task)
    policy, tokenizer, described, model_dir = load_for_eval(cfg, task, checkpoint, base)
    engine = None
    if cfg.rollout.backend == "vllm":  # samples from the loaded policy (its weights are synced in)
        from rlx.rollout.vllm import VLLMRollout

        engine = VLLMRollout(cfg.rollout, cfg.model, model_dir)
    metrics, samples = evaluate_policy(policy, tokenizer, task, cfg, engine)
    run_id = log_to_mlflow(cfg, checkpoint, described, metrics, samples)
    width = max(len(k) for k in metrics)
    print(f"rlx-eval: {described} on task {cfg.task.name} (n={cfg.eval.samples_per_prompt} per prompt)")
    for key in sorted(metrics):
        print(f"  {key:<{width}}  {metrics[key]:.4f}")
    print(f"MLflow run {run_id} in {cfg.logger.tracking_uri} (experiment '{cfg.logger.experiment_name}')")
    return metrics


def main(argv: Sequence[str] | None = None) -> None:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    checkpoint, base, overrides = split_arguments(argv)
    if not checkpoint:
        print(f"rlx-eval: checkpoint=... is required\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    try:
        run_eval(checkpoint, base, overrides)
    except (ConfigError, FileNotFoundError, ValueError, HydraException, OmegaConfBaseException) as exc:
        print(f"rlx-eval: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

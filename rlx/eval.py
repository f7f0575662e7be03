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
from typing import Callable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from rlx.metrics import distinct_correct, pass_at_k
from rlx.tasks.base import RewardStats, is_multi_turn, safe_rewards

SUCCESS_THRESHOLD = 1.0 - 1e-6
USAGE = "usage: rlx-eval checkpoint=<last.ckpt | save_pretrained dir | base> [base=<dir>] [Hydra overrides]"


# ----------------------------------------------------------------------------------- metrics
def split_metrics(rewards: Sequence[float], completions: Sequence[str], n: int, ks: Sequence[int],
                  answer_key: Callable[[str], str]) -> dict[str, float]:
    """Metrics of one split whose rows are n samples per prompt, prompts contiguous:
    pass_at_k/<k> = mean over prompts of the unbiased pass@k from (n, c correct);
    pass_at_1 = fraction of correct samples; distinct_correct = mean over prompts of the number
    of different correct answers (by answer_key); reward_mean = mean reward."""
    if len(rewards) % n or len(rewards) != len(completions):
        raise ValueError(f"{len(rewards)} rewards / {len(completions)} completions are not n={n} per prompt")
    correct = [r >= SUCCESS_THRESHOLD for r in rewards]
    prompts = len(rewards) // n
    out: dict[str, float] = {}
    for k in ks:
        out[f"pass_at_k/{k}"] = float(np.mean([pass_at_k(n, sum(correct[p * n:(p + 1) * n]), k)
                                               for p in range(prompts)]))
    out["pass_at_1"] = float(np.mean(correct))
    out["distinct_correct"] = float(np.mean([
        distinct_correct(completions[p * n:(p + 1) * n], correct[p * n:(p + 1) * n], answer_key)
        for p in range(prompts)]))
    out["reward_mean"] = float(np.mean(rewards))
    return out


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """(sum(values * mask), sum(mask)): the parts of a token mean, to combine across batches."""
    return float((values * mask).sum()), float(mask.sum())


# ----------------------------------------------------------------------------------- checkpoints
def policy_state(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The policy's weights from an rlx Lightning checkpoint (the `policy.` entries of its
    state_dict, prefix removed)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    weights = state.get("state_dict", state)
    policy = {k[len("policy."):]: v for k, v in weights.items() if k.startswith("policy.")}
    if not policy:
        raise ValueError(f"{checkpoint}: no policy weights (expected an rlx-train checkpoint)")
    return policy


def load_policy_weights(policy: torch.nn.Module, checkpoint: str | Path) -> None:
    """Load an rlx checkpoint's policy weights into `policy` (same architecture; LoRA already
    applied when the checkpoint has adapters). Every weight must match: strict loading."""
    policy.load_state_dict(policy_state(checkpoint), strict=True)


def checkpoint_base_dir(checkpoint: Path, tracking_uri: str) -> str | None:
    """The base policy directory of the run that wrote `checkpoint` (its MLflow tag), or None."""
    from mlflow.tracking import MlflowClient

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    run_id = state.get("rlx", {}).get("mlflow_run_id")
    if not run_id:
        return None
    try:
        return MlflowClient(tracking_uri).get_run(run_id).data.tags.get("base_policy")
    except Exception:  # noqa: BLE001 - another store, or the run is gone
        return None


def load_for_eval(cfg: DictConfig, task, checkpoint: str, base: str | None):
    """(policy, tokenizer, description) for `checkpoint`: "base", a save_pretrained directory or
    a .ckpt file (architecture from `base`, the run's base_policy tag, or the config's base)."""
    from rlx.models import load_pretrained, prepare_policy
    from rlx.train import task_identity
    from rlx.warmstart import base_policy

    def config_base():
        return base_policy(task, task_identity(cfg.task), cfg.model, cfg.task.warmstart, cfg.cache_dir)[:2]

    if checkpoint == "base":
        policy, tokenizer = config_base()
        return policy, tokenizer, "base policy"
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        policy, tokenizer = load_pretrained(str(path))
        return policy, tokenizer, str(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint={checkpoint!r}: no such file or directory")
    base = base or checkpoint_base_dir(path, cfg.logger.tracking_uri)
    policy, tokenizer = load_pretrained(base) if base else config_base()
    state = policy_state(path)
    if any("lora_" in k for k in state):
        policy = prepare_policy(policy, tokenizer, cfg.model)
    policy.load_state_dict(state, strict=True)
    return policy, tokenizer, str(path)


# ----------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def sample_split(policy, tokenizer, task, prompts, cfg: DictConfig, format_prompt: Callable[[str], str]):
    """(rollout batches, rewards, completions) for n samples per prompt, in chunks of prompts."""
    from rlx.rollout import sampler_fn
    from rlx.rollout.multiturn import run_episodes

    ro, n = cfg.rollout, cfg.eval.samples_per_prompt
    chunk = max(1, int(cfg.eval.get("batch_size", 256)) // n)
    batches, rewards, completions = [], [], []
    for start in range(0, len(prompts), chunk):
        part = prompts[start:start + chunk]
        if is_multi_turn(task):
            batch = run_episodes(policy, tokenizer, task, part, n, ro.max_new_tokens, ro.temperature, ro.top_k,
                                 ro.top_p)
            rewards += batch.extras["episode_rewards"]
        else:
            sample = sampler_fn(ro.get("sampler", "generate"))
            batch = sample(policy, tokenizer, [format_prompt(p.text) for p in part], n, ro.max_new_tokens,
                           ro.temperature, ro.top_k, ro.top_p)
            rewards += safe_rewards(task, [part[i] for i in batch.prompt_index.tolist()], batch.completions,
                                    RewardStats())
        batches.append(batch)
        completions += batch.completions
    return batches, rewards, completions


@torch.no_grad()
def batch_entropy(policy, batches, cfg: DictConfig) -> float:
    """Token-mean exact entropy (fp32) of the policy over the policy tokens of the batches."""
    from rlx.module import response_token_stats

    total = count = 0.0
    size = cfg.trainer.micro_batch_size
    for batch in batches:
        for i in range(0, len(batch.completions), size):
            part = batch.select(torch.arange(i, min(i + size, len(batch.completions))))
            stats = response_token_stats(policy, part, cfg.rollout.temperature, cfg.monitor.chunk_size, True)
            s, c = masked_token_mean(stats.entropy, part.response_mask)
            total, count = total + s, count + c
    return total / max(count, 1.0)


def evaluate_policy(policy, tokenizer, task, cfg: DictConfig) -> tuple[dict[str, float], str]:
    """Metrics `<split>/...` over every evaluation split, and the samples as TSV text."""
    from rlx.models import prompt_formatter

    policy.eval()
    torch.manual_seed(cfg.seed)
    format_prompt = prompt_formatter(tokenizer, cfg.get("model"))
    n = cfg.eval.samples_per_prompt
    metrics: dict[str, float] = {}
    lines = ["split\tprompt\tcompletion\treward"]
    for split, prompts in task.eval_prompts().items():
        batches, rewards, completions = sample_split(policy, tokenizer, task, prompts, cfg, format_prompt)
        for key, value in split_metrics(rewards, completions, n, list(cfg.eval.k), task.answer_key).items():
            metrics[f"{split}/{key}"] = value
        metrics[f"{split}/entropy"] = batch_entropy(policy, batches, cfg)
        for row in range(0, len(completions), max(1, n // 2)):
            lines.append(f"{split}\t{prompts[row // n].text!r}\t{completions[row]!r}\t{rewards[row]:.2f}")
    return metrics, "\n".join(lines) + "\n"


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


def compose(overrides: Sequence[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rlx.config import CONF_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def log_to_mlflow(cfg: DictConfig, checkpoint: str, described: str, metrics: dict[str, float],
                  samples: str) -> str:
    """A new run in the task's experiment: params (checkpoint, task, eval keys), metrics, samples."""
    from mlflow.tracking import MlflowClient

    from rlx.tracking import local_artifact_location

    client = MlflowClient(cfg.logger.tracking_uri)
    name = cfg.logger.experiment_name
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        name, artifact_location=local_artifact_location(cfg.logger.tracking_uri, cfg.logger.artifact_location))
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
    from rlx.config import validate
    from rlx.train import instantiate_task, quiet_libraries

    cfg = compose(overrides)
    validate(cfg)
    quiet_libraries()
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    task = instantiate_task(cfg.task)
    policy, tokenizer, described = load_for_eval(cfg, task, checkpoint, base)
    metrics, samples = evaluate_policy(policy, tokenizer, task, cfg)
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

    from rlx.config import ConfigError

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

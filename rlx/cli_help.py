"""`rlx-train --help`: what the command does, the config groups and their choices (read from conf/),
example commands and where runs go. Imports nothing heavy, so the help prints in well under a
second (Hydra's own help stays available as `rlx-train --hydra-help`)."""

from __future__ import annotations

import textwrap
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# the groups a user picks from, in the order config.yaml composes them, with one line each
GROUPS = (
    ("algorithm", "objective + entropy regulator"),
    ("algorithm.base", "the base objective under a regulator (algorithm.base=dapo)"),
    ("precision", "numeric precision of rollouts and updates"),
    ("model", "policy model: from config (random init + warm-start) or pretrained"),
    ("task", "prompts and reward"),
    ("rollout", "generation backend"),
    ("trainer", "devices and distribution"),
    ("experiment", "presets that override a few keys"),
    ("hydra/launcher", "how --multirun jobs run"),
    ("hydra/sweeper", "search sweepers for --multirun"),
)

EXAMPLES = (
    ("rlx-train", "REPO-R on the default task, tiny model, CPU"),
    ("rlx-train algorithm=grpo seed=1 trainer.max_steps=50", "GRPO, another seed, 50 iterations"),
    ("rlx-train algorithm=repo_r algorithm.base=dapo precision=bf16_mixed", "REPO-R on DAPO, bf16 mixed precision"),
    ("rlx-train experiment=debug", "a short run (seconds) to check a setup"),
    ("rlx-train --multirun algorithm=grpo,repo_r,rloo seed=0,1,2", "a sweep: one parent MLflow run, 9 jobs"),
    ("rlx-train --multirun hydra/launcher=local_parallel algorithm=grpo,repo_r trainer.num_threads=1",
     "the same, jobs in parallel processes"),
    ("rlx-train task=custom task.prompts=prompts.jsonl task.reward_fn=my_rewards.py:score",
     "your own prompts and reward"),
    ("rlx-train model=qwen3_0_6b trainer=gpu rollout=vllm", "a pretrained model on a GPU"),
    ("rlx-train resume=last", "continue the newest interrupted run"),
    ("rlx-train --cfg job algorithm=dapo", "print the composed config, run nothing"),
)


def choices(group: str) -> list[str]:
    """The choices of a config group: the YAML files of its folder under conf/ (hydra/launcher
    and hydra/sweeper also take Hydra's own plugins' names)."""
    folder = CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def help_text() -> str:
    """The full `rlx-train --help` text."""
    lines = [
        "usage: rlx-train [--multirun] [KEY=VALUE | GROUP=CHOICE ...]",
        "",
        "Train a language-model policy with RL (GRPO, DAPO, RLOO, REPO, ADAPO, ...) while tracking its",
        "entropy. The config is composed by Hydra from conf/: pick one choice per group and override",
        "any key with KEY=VALUE; a bad key or value stops the run with one line (exit code 2).",
        "",
        "config groups (GROUP=CHOICE):",
    ]
    width = max(len(g) for g, _ in GROUPS)
    for group, what in GROUPS:
        lines.append(f"  {group:<{width}}  {what}:")
        lines += textwrap.wrap(", ".join(choices(group)) or "(none)", 100, initial_indent=" " * (width + 4),
                               subsequent_indent=" " * (width + 4))
    lines += [
        "",
        "common keys: seed, trainer.max_steps (RL iterations), algorithm.group_size, task.prompts_per_step,",
        "  rollout.max_new_tokens, eval_every, run_name, trainer.num_threads; all keys: rlx-train --cfg job",
        "",
        "examples:",
    ]
    for command, what in EXAMPLES:
        lines += [f"  # {what}", f"  {command}"]
    lines += [
        "",
        "where runs go: one MLflow run per job in outputs/mlflow.db (sqlite; MLFLOW_TRACKING_URI or",
        "  logger.tracking_uri=... for another store), experiment named after the task, run named after",
        "  what ran (e.g. repo_r+dapo-bf16_mixed-s2); checkpoints in outputs/checkpoints/<run id>/; Hydra's",
        "  run folders in outputs/hydra/ and outputs/multirun/. Open the dashboard with",
        "  .venv/bin/mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db",
        "",
        "more: ./multirun.sh (named sweeps), rlx-compare --help (tables and plots across runs),",
        "  rlx-train --hydra-help (Hydra's own flags: --cfg, --info, --config-dir, ...), README.md",
    ]
    return "\n".join(lines)


def wants_help(argv: list[str]) -> bool:
    """Whether the command line asks for rlx's help (`--help` / `-h`, not `--hydra-help`)."""
    return any(a in ("--help", "-h") for a in argv)

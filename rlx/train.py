"""`rlx-train`: compose the config (Hydra), then run one RL experiment (rlx.run) or, with
experiment=sequential, two phases (rlx.sequential).

    rlx-train algorithm=grpo seed=1
    rlx-train --multirun algorithm=grpo,repo_r seed=0,1,2
    rlx-train resume=last
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rlx.cli_help import help_text, wants_help
from rlx.config import CONF_DIR, ConfigError
from rlx.overrides import check_overrides

# torch, Lightning and transformers are imported where they are used (train, hydra_entry), so
# `rlx-train --help` and a mistyped override answer in well under a second.


def train(cfg: DictConfig, init_checkpoint: str | Path | None = None, base_task_cfg: DictConfig | None = None,
          extra_tags: dict[str, str] | None = None, callbacks: list | None = None) -> dict[str, float]:
    """Run the experiment `cfg` describes and return its last metrics (plus summaries): one RL
    run (rlx.run.run_rl, which takes the keyword arguments), or both phases of experiment=sequential."""
    from rlx.run import run_rl
    from rlx.sequential import run_sequential

    if cfg.get("sequential") is not None:
        return run_sequential(cfg)
    return run_rl(cfg, init_checkpoint=init_checkpoint, base_task_cfg=base_task_cfg, extra_tags=extra_tags,
                  callbacks=callbacks)


def check_early(cfg: DictConfig) -> None:
    """The config checks that need neither Lightning nor transformers (rlx.config.validate, a
    pretrained model that can be had: rlx.hub), made before those are imported, so a bad value
    ends the command in a few seconds; rlx.run checks everything again."""
    from rlx.config import validate
    from rlx.hub import check_pretrained_available

    check_pretrained_available(cfg.model)  # first: the model node needs no registry (torch, transformers)
    validate(cfg)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_entry(cfg: DictConfig) -> float | None:
    try:
        check_early(cfg)
    except ConfigError as exc:
        print(f"rlx-train: invalid config: {exc}", file=sys.stderr)
        sys.exit(2)
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from rlx.interrupt import Interrupted
    from rlx.learner.guards import RunStopped
    from rlx.models import ModelLoadError

    try:
        metrics = train(cfg)
    except ConfigError as exc:
        print(f"rlx-train: invalid config: {exc}", file=sys.stderr)
        sys.exit(2)
    except ModelLoadError as exc:  # a pretrained model that cannot be had here: the message says how to get it
        print(f"rlx-train: cannot load the model: {exc}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:  # SIGTERM / SIGINT: exit 143 / 130, as a shell reports a signalled process
        hint = "; continue it with the same command plus resume=last" if exc.checkpoint else ""
        print(f"rlx-train: {exc}{hint}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except RunStopped as exc:  # a guard: the run can no longer learn (rlx.learner.guards)
        print(f"rlx-train: run stopped: {exc}", file=sys.stderr)
        sys.exit(1)
    except SIGTERMException:  # Lightning's own SIGTERM stop (e.g. during the warm-start) exits 0 otherwise
        print("rlx-train: stopped by SIGTERM", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    return metrics.get("train/reward_mean")


def main() -> None:
    """rlx-train: rlx's own help for --help / -h; a mistyped group, choice or key stops with one
    line and exit code 2 (rlx.overrides); everything else is Hydra's app (hydra_entry)."""
    argv = sys.argv[1:]
    if wants_help(argv):
        print(help_text())
        sys.exit(0)
    problem = check_overrides(argv)
    if problem:
        print(f"rlx-train: invalid config: {problem}", file=sys.stderr)
        sys.exit(2)
    hydra_entry()


if __name__ == "__main__":
    main()

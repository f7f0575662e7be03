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
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from rlx.config import CONF_DIR, ConfigError
from rlx.interrupt import Interrupted
from rlx.run import run_rl
from rlx.sequential import run_sequential


def train(cfg: DictConfig, init_checkpoint: str | Path | None = None, base_task_cfg: DictConfig | None = None,
          extra_tags: dict[str, str] | None = None, callbacks: list | None = None) -> dict[str, float]:
    """Run the experiment `cfg` describes and return its last metrics (plus summaries): one RL
    run (rlx.run.run_rl, which takes the keyword arguments), or both phases of experiment=sequential."""
    if cfg.get("sequential") is not None:
        return run_sequential(cfg)
    return run_rl(cfg, init_checkpoint=init_checkpoint, base_task_cfg=base_task_cfg, extra_tags=extra_tags,
                  callbacks=callbacks)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_entry(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except ConfigError as exc:
        print(f"rlx-train: invalid config: {exc}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:  # SIGTERM / SIGINT: exit 143 / 130, as a shell reports a signalled process
        hint = "; continue it with the same command plus resume=last" if exc.checkpoint else ""
        print(f"rlx-train: {exc}{hint}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except SIGTERMException:  # Lightning's own SIGTERM stop (e.g. during the warm-start) exits 0 otherwise
        print("rlx-train: stopped by SIGTERM", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    return metrics.get("train/reward_mean")


def main() -> None:
    hydra_entry()


if __name__ == "__main__":
    main()

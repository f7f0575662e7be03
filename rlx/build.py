"""What the entry points (rlx-train, rlx-eval, experiment=sequential) share: composing a config,
building the task, reading checkpoints. No entry point imports another; they import this."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Sequence

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rlx.config import CONF_DIR, ConfigError

from rlx.schema import TASK_TRAINER_KEYS as TRAINER_TASK_KEYS  # task keys the trainer reads, not the task constructor


def quiet_libraries() -> None:
    """Silence warnings that are noise for a one-batch-per-epoch RL loop."""
    import transformers

    for pattern in (".*does not have many workers.*", ".*LeafSpec.*", ".*module\\(s\\) in eval mode.*"):
        warnings.filterwarnings("ignore", message=pattern)
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


def compose(overrides: Sequence[str]) -> DictConfig:
    """The config rlx-train would compose from these overrides (Hydra's compose API)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def task_identity(task_cfg: DictConfig) -> dict:
    """The task's constructor keys (what defines the task, e.g. for the warm-start cache key)."""
    return {k: v for k, v in OmegaConf.to_container(task_cfg, resolve=True).items() if k not in TRAINER_TASK_KEYS}


def instantiate_task(task_cfg: DictConfig):
    """The task object from task._target_, without the trainer-side keys. A task constructor's
    ConfigError (bad path, missing package) comes out as itself, not wrapped by Hydra."""
    from hydra.errors import InstantiationException

    try:
        return hydra.utils.instantiate(task_identity(task_cfg))
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ConfigError):
            raise exc.__cause__ from None
        raise


def sweep_id_of(cfg: DictConfig) -> str | None:
    """cfg.sweep_id, else the sweep directory of a Hydra multirun (None for a single run)."""
    if cfg.sweep_id:
        return str(cfg.sweep_id)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return str(HydraConfig.get().sweep.dir)
    return None


# ----------------------------------------------------------------------------------- checkpoints
def find_checkpoint(resume: str, checkpoint_dir: str) -> Path:
    """A checkpoint path, or for "last" the newest last.ckpt under checkpoint_dir."""
    if resume != "last":
        path = Path(resume)
        if not path.is_file():
            raise ConfigError(f"resume={resume!r}: no such checkpoint file")
        return path
    candidates = sorted(Path(checkpoint_dir).glob("*/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(f"resume='last': no last.ckpt under checkpoint.dir={checkpoint_dir!r}")
    return candidates[-1]


def checkpoint_run_id(path: Path) -> str | None:
    """The MLflow run id that wrote an rlx checkpoint (None when it has none)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state.get("rlx", {}).get("mlflow_run_id")


def read_policy_checkpoint(checkpoint: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the policy's weights from an rlx Lightning checkpoint: the `policy.` entries of its
    state_dict, prefix removed; the names of the policy's frozen weights it leaves out, e.g. a
    LoRA run's base model, rlx.checkpoints)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    weights = state.get("state_dict", state)
    policy = {k[len("policy."):]: v for k, v in weights.items() if k.startswith("policy.")}
    if not policy:
        raise ValueError(f"{checkpoint}: no policy weights (expected an rlx-train checkpoint)")
    omitted = [k[len("policy."):] for k in state.get("rlx", {}).get("frozen_omitted", []) if k.startswith("policy.")]
    return policy, omitted


def policy_state(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The policy's saved weights from an rlx Lightning checkpoint (read_policy_checkpoint)."""
    return read_policy_checkpoint(checkpoint)[0]


def load_policy_weights(policy: torch.nn.Module, checkpoint: str | Path) -> None:
    """Load an rlx checkpoint's policy weights into `policy` (same architecture; LoRA already
    applied when the checkpoint has adapters). Every saved weight must match and every weight the
    checkpoint lacks must be one it omitted as frozen (kept as the base policy has it)."""
    from rlx.checkpoints import load_partial

    state, omitted = read_policy_checkpoint(checkpoint)
    load_partial(policy, state, omitted)


def checkpoint_base_dir(checkpoint: Path, tracking_uri: str) -> str | None:
    """The base policy directory of the run that wrote `checkpoint` (its MLflow tag), or None."""
    from mlflow.tracking import MlflowClient

    run_id = checkpoint_run_id(checkpoint)
    if not run_id:
        return None
    try:
        return MlflowClient(tracking_uri).get_run(run_id).data.tags.get("base_policy")
    except Exception:  # noqa: BLE001 - another store, or the run is gone
        return None


def policy_from_checkpoint(cfg: DictConfig, task, checkpoint: Path, base: str | None):
    """(policy, tokenizer, architecture directory) of an rlx .ckpt file: the architecture and
    tokenizer from `base`, else the run's base_policy tag (found through the checkpoint's run id in
    logger.tracking_uri), else the config's own base policy; LoRA applied when it has adapters."""
    from rlx.checkpoints import load_partial
    from rlx.models import load_pretrained, prepare_policy
    from rlx.warmstart import base_policy

    base = base or checkpoint_base_dir(checkpoint, cfg.logger.tracking_uri)
    if base:
        (policy, tokenizer), base_dir = load_pretrained(base), base
    else:
        policy, tokenizer, base_dir = base_policy(task, task_identity(cfg.task), cfg.model, cfg.task.warmstart,
                                                  cfg.cache_dir)
    state, omitted = read_policy_checkpoint(checkpoint)
    if any("lora_" in k for k in state):
        policy = prepare_policy(policy, tokenizer, cfg.model)
    load_partial(policy, state, omitted)
    return policy, tokenizer, str(base_dir)

"""The trained policy as a Hugging Face model directory, readable without rlx (transformers,
vLLM, TGI, ...). Written at the end of every run (export.enabled) and by `rlx-export`:

    rlx-export checkpoint=outputs/checkpoints/<run id>/last.ckpt             # -> <run id>/export/
    rlx-export checkpoint=last out=/data/my-policy export.dtype=bf16
    rlx-export checkpoint=<ckpt> model.lora.enabled=true export.merge=false  # the adapters only

Layout of the directory (export.dir, default <checkpoint.dir>/<run id>/export):
    config.json, model.safetensors, generation_config.json, tokenizer files   the full model
    adapter/   a LoRA run's adapters alone (peft format, base_model_name_or_path = the base policy)
A LoRA run's full model is the base with the adapters merged in (export.merge=true); with
export.merge=false only adapter/ is written. Weights are cast to export.dtype (fp32, bf16, fp16,
or auto: the policy's own). generation_config.json samples as the run's rollouts did
(rollout.temperature, top_k, top_p, max_new_tokens), so `vllm serve <dir>` and `generate()`
default to the training distribution.

Every other argument of rlx-export is a Hydra override of the training config (the model's LoRA
keys must be the run's); the architecture comes from base=<dir>, else the checkpoint's MLflow run,
else the config (as rlx-eval). With export.log_model=true the directory is also logged to the
checkpoint's MLflow run as a model (rlx.mlflow_model).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import torch

USAGE = "usage: rlx-export checkpoint=<file | last> [out=<dir>] [base=<dir>] [Hydra overrides, e.g. export.dtype=bf16]"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "auto": None}
ADAPTER_DIR = "adapter"


def export_dtype(name: str, model: torch.nn.Module) -> torch.dtype:
    """The dtype export.dtype names; `auto` is the dtype of the model's floating-point weights."""
    if name not in DTYPES:
        raise ValueError(f"export.dtype={name!r}: allowed {list(DTYPES)}")
    if DTYPES[name] is not None:
        return DTYPES[name]
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def generation_settings(model, tokenizer, rollout_cfg=None):
    """The model's GenerationConfig with the special tokens of its tokenizer and, given the run's
    `rollout` config, the sampling of its rollouts: do_sample, temperature, top_k (0 = off),
    top_p, max_new_tokens."""
    from transformers import GenerationConfig

    settings = GenerationConfig.from_dict(model.generation_config.to_dict()) if model.generation_config \
        else GenerationConfig()
    settings.bos_token_id, settings.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    settings.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if rollout_cfg is not None:
        settings.do_sample = True
        settings.temperature = float(rollout_cfg.temperature)
        settings.top_k = int(rollout_cfg.top_k)
        settings.top_p = float(rollout_cfg.top_p)
        settings.max_new_tokens = int(rollout_cfg.max_new_tokens)
    return settings


def save_model(model, tokenizer, out: Path, dtype: torch.dtype, generation) -> Path:
    """model (cast to dtype in place), its tokenizer and generation config, via save_pretrained."""
    model.to(dtype)
    model.generation_config = generation
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def export_policy(policy, tokenizer, out: str | Path, dtype: str = "fp32", merge: bool = True,
                  rollout_cfg=None) -> dict[str, Path]:
    """Write `policy` to `out` (layout in the module docstring); {"model": dir, "adapter": dir} of
    what was written. The policy is cast, and a LoRA policy merged, in place: export last."""
    from rlx.models import is_lora_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = export_dtype(dtype, policy)
    generation = generation_settings(policy, tokenizer, rollout_cfg)
    written: dict[str, Path] = {}
    if is_lora_model(policy):
        policy.to(target)
        policy.save_pretrained(out / ADAPTER_DIR)  # peft: the adapter weights and adapter_config.json only
        tokenizer.save_pretrained(out / ADAPTER_DIR)
        written["adapter"] = out / ADAPTER_DIR
        if not merge:
            return written
        policy = policy.merge_and_unload()
    written["model"] = save_model(policy, tokenizer, out, target, generation)
    return written


def default_export_dir(cfg, run_dir: str) -> Path:
    """export.dir, else <checkpoint.dir>/<run dir>/export (next to the run's checkpoints)."""
    if cfg.export.dir:
        return Path(str(cfg.export.dir))
    return Path(cfg.checkpoint.dir) / run_dir / "export"


def exportable(cfg) -> bool:
    """Whether the policy is whole on this process at the end of a run (not FSDP-sharded)."""
    strategy = cfg.trainer.strategy
    name = strategy.get("name") if hasattr(strategy, "get") else strategy
    return name != "fsdp"


def export_at_end(cfg, policy, tokenizer, logger) -> dict[str, Path]:
    """The end of a run: the policy exported next to its checkpoints (or to export.dir) and, when
    the run has an MLflow run and a full model was written, logged to it as a model; the seconds
    each took are printed. Nothing under FSDP (shards): rlx-export checkpoint=last does it."""
    import time

    if not exportable(cfg):
        print("rlx: FSDP run: export the policy with rlx-export checkpoint=last")
        return {}
    run_id = logger.run_id if logger is not None else None
    target = default_export_dir(cfg, run_id or "rank0")
    t0 = time.perf_counter()
    written = export_policy(policy, tokenizer, target, cfg.export.dtype, cfg.export.merge, cfg.rollout)
    message = f"rlx: the trained policy is at {target} ({time.perf_counter() - t0:.1f} s)"
    if cfg.export.log_model and logger is not None and "model" in written:
        from rlx.mlflow_model import log_policy_model

        t0 = time.perf_counter()
        uri = log_policy_model(cfg.logger.tracking_uri, run_id, target, cfg.export.register_as)
        message += f"; MLflow model {uri} ({time.perf_counter() - t0:.1f} s)"
    print(message)
    return written


# ----------------------------------------------------------------------------------- entry point
def split_arguments(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """({checkpoint, out, base} given as key=value, the other arguments as Hydra overrides)."""
    own, overrides = {}, []
    for arg in argv:
        key = arg.split("=", 1)[0]
        if key in ("checkpoint", "out", "base") and "=" in arg:
            own[key] = arg.split("=", 1)[1]
        else:
            overrides.append(arg)
    return own, overrides


def run_export(checkpoint: str, out: str | None, base: str | None, overrides: Sequence[str]) -> dict[str, Path]:
    """Compose the config, load the checkpoint's policy, export it (and log it to its MLflow run)."""
    from rlx.build import (checkpoint_run_id, compose, find_checkpoint, instantiate_task, policy_from_checkpoint,
                           quiet_libraries)
    from rlx.config import validate

    cfg = validate(compose(overrides))
    quiet_libraries()
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    path = find_checkpoint(checkpoint, cfg.checkpoint.dir)
    policy, tokenizer, _ = policy_from_checkpoint(cfg, instantiate_task(cfg.task), path, base)
    target = Path(out) if out else path.parent / "export"
    written = export_policy(policy, tokenizer, target, cfg.export.dtype, cfg.export.merge, cfg.rollout)
    print(f"rlx-export: {path} -> " + ", ".join(f"{kind} {where}" for kind, where in written.items()))
    run_id = checkpoint_run_id(path)
    if cfg.export.log_model and run_id and "model" in written:
        from rlx.mlflow_model import log_policy_model

        uri = log_policy_model(cfg.logger.tracking_uri, run_id, target, cfg.export.register_as)
        if uri:
            print(f"rlx-export: logged to MLflow run {run_id} as {uri}")
    return written


def main(argv: Sequence[str] | None = None) -> None:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from rlx.config import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    own, overrides = split_arguments(argv)
    if not own.get("checkpoint"):
        print(f"rlx-export: checkpoint=... is required\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    try:
        run_export(own["checkpoint"], own.get("out"), own.get("base"), overrides)
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError, HydraException, OmegaConfBaseException) as exc:
        print(f"rlx-export: {str(exc).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""One RL run: build task, base policy, learner module and Lightning Trainer from a checked
config, fit, and leave the MLflow run with its params, metrics, curves and checkpoints."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from rlx.build import (checkpoint_run_id, find_checkpoint, instantiate_task, load_policy_weights,
                       quiet_libraries, sweep_id_of, task_identity)
from rlx.callbacks import IterationProgress
from rlx.checkpoints import checkpoint_callbacks
from rlx.config import ConfigError, validate
from rlx.console import final_summary
from rlx.export import export_at_end
from rlx.hub import check_pretrained_available
from rlx.interrupt import StopOnSignal, failed_on_error, fit_or_stop
from rlx.learner.distributed import leave_together
from rlx.models import prepare_policy
from rlx.module import RLModule
from rlx.precision import lightning_precision
from rlx.preflight import check_environment
from rlx.requeue import mark_job, requeue_signal, requeued_checkpoint, slurm_job_key
from rlx.tracking import (config_params, flush_metrics, logged_metric_steps, make_logger, run_tags,
                          summary_tags, ui_hint)
from rlx.warmstart import base_policy


def log_run_files(logger, cfg: DictConfig, base_dir: Path) -> None:
    """Params (flattened config), the resolved YAML and the base policy's location."""
    logger.log_hyperparams(config_params(cfg))
    client, run_id = logger.experiment, logger.run_id
    client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
    client.set_tag(run_id, "base_policy", str(base_dir))


def log_curves(logger) -> None:
    """The run's own entropy and reward curves as a PNG artifact."""
    try:
        from rlx.plots import plot_run_curves
    except ImportError:
        return
    client, run_id = logger.experiment, logger.run_id
    history = {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        for key in ("train/entropy", "train/reward_mean", "train/entropy_change_pct")
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_run_curves(history, Path(tmp) / "curves.png")
        client.log_artifact(run_id, str(path), "plots")


def make_strategy(trainer_cfg: DictConfig):
    """The Lightning strategy of trainer.strategy: a name (auto, ddp, fsdp, ...) or, for FSDP with
    options, a node {name: fsdp, wrap: [decoder layer classes, dotted], ...FSDPStrategy kwargs}."""
    strategy = trainer_cfg.strategy
    if not OmegaConf.is_dict(strategy):
        return strategy
    options = OmegaConf.to_container(strategy, resolve=True)
    options.pop("name")
    from lightning.pytorch.strategies import FSDPStrategy

    wrap = options.pop("wrap", None) or []
    layers = {hydra.utils.get_class(name) for name in wrap}  # e.g. transformers.models.qwen3.modeling_qwen3.Qwen3DecoderLayer
    return FSDPStrategy(auto_wrap_policy=layers or None, **options)


def check_config(cfg: DictConfig) -> DictConfig:
    """The checked config (rlx.config.validate), writable directories and a reachable tracking
    server (rlx.preflight), a pretrained model that can be had (rlx.hub), and for rollout=vllm
    whether this machine can run vLLM: everything that can fail before a model or an MLflow run
    exists."""
    cfg = validate(cfg)
    check_environment(cfg)
    check_pretrained_available(cfg.model)  # a Hub model neither cached nor downloadable: one line, in seconds
    if cfg.rollout.backend == "vllm":
        from rlx.rollout.vllm import check_vllm

        try:
            check_vllm(cfg.trainer.accelerator)
        except RuntimeError as exc:
            raise ConfigError(str(exc)) from exc
    return cfg


def build_trainer(cfg: DictConfig, logger, callbacks: list | None) -> L.Trainer:
    """The Lightning Trainer of a run: one epoch per RL iteration, checkpoints every checkpoint.every
    and, on SIGTERM / SIGINT / SLURM's preemption warning, of the iteration that was running
    (rlx.interrupt, rlx.requeue)."""
    # other ranks get rank 0's directory (ModelCheckpoint broadcasts it at setup)
    run_dir = logger.run_id if logger is not None else f"rank{rank_zero_only.rank}"
    checkpoints = checkpoint_callbacks(cfg.checkpoint, Path(cfg.checkpoint.dir) / run_dir)  # rlx.checkpoints
    if rank_zero_only.rank == 0:
        mark_job(Path(cfg.checkpoint.dir) / run_dir)  # a requeued SLURM job finds its checkpoints here
    return L.Trainer(
        max_epochs=cfg.trainer.max_steps,  # one epoch = one RL iteration (one rollout batch)
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes,
        strategy=make_strategy(cfg.trainer),
        **lightning_precision(cfg.precision.trainer_precision, cfg.trainer.accelerator),
        logger=logger if logger is not None else False,
        callbacks=[*checkpoints, IterationProgress(), StopOnSignal(requeue_signal()), *(callbacks or [])],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=1,
        reload_dataloaders_every_n_epochs=0,
    )


def build_module(cfg: DictConfig, init_checkpoint, base_task_cfg) -> tuple[RLModule, Path]:
    """(the RL module with task, base policy (LoRA, init checkpoint) and rollout engine, base policy dir)."""
    task = instantiate_task(cfg.task)
    base_cfg = cfg.task if base_task_cfg is None else base_task_cfg
    base_task = task if base_task_cfg is None else instantiate_task(base_task_cfg)
    policy, tokenizer, base_dir = base_policy(base_task, task_identity(base_cfg), cfg.model, base_cfg.warmstart,
                                              cfg.cache_dir)
    policy = prepare_policy(policy, tokenizer, cfg.model, cfg.trainer)  # LoRA adapters, gradient checkpointing
    if init_checkpoint is not None:
        load_policy_weights(policy, init_checkpoint)
    engine = None
    if cfg.rollout.backend == "vllm":
        from rlx.rollout.vllm import VLLMRollout

        engine = VLLMRollout(cfg.rollout, cfg.model, base_dir)
    return RLModule(policy, tokenizer, task, cfg, rollout_engine=engine), base_dir


def finish_run(logger, cfg: DictConfig, module: RLModule) -> dict[str, float]:
    """End-of-run summaries and curves logged; the run's last metrics with the summaries."""
    summary = module.summary_metrics()
    if logger is not None:
        for key, value in summary_tags(summary, module.counter_totals).items():  # one-off values: tags, not charts
            logger.experiment.set_tag(logger.run_id, key, value)
        flush_metrics(logger)  # the curves below read them back
        log_curves(logger)
    if cfg.export.enabled and rank_zero_only.rank == 0:  # the policy as a Hugging Face directory (rlx.export)
        export_at_end(cfg, module.policy, module.tokenizer, logger)
    final = {**module.last_metrics, **module.final_metrics, **summary}
    if rank_zero_only.rank == 0:
        name = logger.experiment.get_run(logger.run_id).info.run_name if logger is not None else cfg.algorithm.name
        print(final_summary(name, final, time.monotonic() - module.started))
    if logger is not None:
        print(ui_hint(logger))
    return {**module.last_metrics, **summary}


def run_rl(cfg: DictConfig, init_checkpoint: str | Path | None = None, base_task_cfg: DictConfig | None = None,
           extra_tags: dict[str, str] | None = None, callbacks: list | None = None) -> dict[str, float]:
    """Run one RL experiment and return its last metrics (plus summaries).

    init_checkpoint: start from that checkpoint's policy weights; base_task_cfg: the task whose
    base policy gives architecture and tokenizer; extra_tags: more MLflow tags; callbacks: extra
    Lightning callbacks (e.g. the benchmarks' iteration timer)."""
    cfg = check_config(cfg)
    quiet_libraries()
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    ckpt_path = find_checkpoint(str(cfg.resume), cfg.checkpoint.dir) if cfg.resume else \
        requeued_checkpoint(cfg.checkpoint.dir)  # a requeued SLURM job goes on by itself (rlx.requeue)
    run_id = checkpoint_run_id(ckpt_path) if ckpt_path is not None else None
    if ckpt_path is not None and not cfg.resume:
        print(f"rlx: requeued SLURM job {slurm_job_key()}: resuming {ckpt_path}")
    module, base_dir = build_module(cfg, init_checkpoint, base_task_cfg)
    module.started = time.monotonic()  # wall time in the final summary (rlx.console)
    # Only rank 0 talks to MLflow (even opening the store writes to it); the rank comes from the
    # launcher's environment (RANK / LOCAL_RANK / SLURM_PROCID) before torch.distributed starts.
    rank_zero = rank_zero_only.rank == 0
    tags = {**run_tags(cfg, sweep_id_of(cfg)), **(extra_tags or {})}
    logger = make_logger(cfg, tags, run_id=run_id) if rank_zero and cfg.logger.enabled else None
    if ckpt_path is None and logger is not None:
        log_run_files(logger, cfg, base_dir)
    elif logger is not None:  # a resumed run (KILLED, FAILED, or left RUNNING by SIGKILL) runs again
        logger.experiment.update_run(logger.run_id, status="RUNNING")
        # iterations after the checkpoint that were logged before the kill are re-run, not re-logged
        module.already_logged = logged_metric_steps(logger.experiment, logger.run_id)
    with failed_on_error(logger):  # an error from here on ends the MLflow run FAILED, with its reason
        return fit_and_finish(cfg, module, logger, callbacks, ckpt_path, rank_zero)


def fit_and_finish(cfg: DictConfig, module: RLModule, logger, callbacks: list | None, ckpt_path: Path | None,
                   rank_zero: bool) -> dict[str, float]:
    """Trainer.fit over cfg.trainer.max_steps iterations (from ckpt_path when resuming), then
    the end-of-run summaries."""
    trainer = build_trainer(cfg, logger, callbacks)
    if rank_zero:
        print(f"rlx: {cfg.algorithm.name} (base {cfg.algorithm.base or cfg.algorithm.name}) on task "
              f"{cfg.task.name}, {cfg.trainer.max_steps} iterations; "
              + (ui_hint(logger).splitlines()[0] if logger is not None else "tracking off (logger.enabled=false)"))
    # Seed last: a warm-start trained in this process must not shift the RL run's random stream.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # a signal ends the run KILLED after a checkpoint of its last completed iteration (rlx.interrupt)
    fit_or_stop(trainer, logger, module, DataLoader([0], batch_size=None),
                ckpt_path=str(ckpt_path) if ckpt_path else None)
    metrics = finish_run(logger, cfg, module)
    leave_together()  # ranks exit together once rank 0 has exported and logged the end of the run
    return metrics

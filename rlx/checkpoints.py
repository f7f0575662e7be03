"""Checkpoints of an RL run: what is saved, how files are named, which are kept.

    <checkpoint.dir>/<run id>/iter-000150.ckpt   the policy after 150 iterations (every checkpoint.every)
    <checkpoint.dir>/<run id>/last.ckpt          the newest of them (what resume=last finds)
    <checkpoint.dir>/<run id>/best-iter-000100.ckpt  with checkpoint.keep_best_by: the best one

A file's number is the count of iterations completed: the metrics logged at MLflow step n
(iteration n's rollout, the evaluation before it) are those of the policy in `iter-<n>.ckpt`.
`checkpoint.keep_last` periodic files are kept besides last.ckpt (-1: all, 0: last.ckpt only).

Frozen parameters (a LoRA run's base model, the frozen reference copy) are not saved: they are
rebuilt from the base policy, and their names are listed under `rlx.frozen_omitted` so a loader
can tell an omitted weight from a missing one. A LoRA checkpoint holds the adapters, the optimizer
state and the run's own state only.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

ITERATION_FILENAME = "iter-{iteration:06d}"
BEST_PREFIX = "best-"
MODES = ("max", "min")


def iteration_filename(iteration: int) -> str:
    """'iter-000150.ckpt' for the policy after 150 iterations."""
    return ITERATION_FILENAME.format(iteration=iteration) + ModelCheckpoint.FILE_EXTENSION


class IterationCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint every `every` iterations, named by the iterations completed
    (one Lightning epoch is one iteration, counted from 0), keeping the newest `keep_last` files
    besides last.ckpt (-1: all; 0: last.ckpt only)."""

    def __init__(self, dirpath: str | Path, every: int, keep_last: int):
        only_last = keep_last == 0  # the one kept periodic file *is* last.ckpt: one write per save
        super().__init__(dirpath=dirpath, filename=self.CHECKPOINT_NAME_LAST if only_last else ITERATION_FILENAME,
                         monitor="iteration", mode="max", save_top_k=1 if only_last else keep_last,
                         every_n_epochs=every, save_last=not only_last, save_on_train_epoch_end=True,
                         auto_insert_metric_name=False, enable_version_counter=not only_last)

    def _monitor_candidates(self, trainer) -> dict[str, torch.Tensor]:
        candidates = super()._monitor_candidates(trainer)
        candidates["iteration"] = torch.tensor(trainer.current_epoch + 1)  # iterations completed
        return candidates


def better(value: float, best: float | None, mode: str) -> bool:
    """Whether `value` beats `best` (None: nothing yet) under mode max or min; NaN never does."""
    if not math.isfinite(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def link_or_copy(source: Path, target: Path) -> None:
    """target as a hard link to source (no extra disk), else a copy (a directory: a tree copy)."""
    if source.is_dir():
        shutil.copytree(source, target)
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


class BestCheckpoint(Callback):
    """Keeps one more file, `best-iter-<n>.ckpt`: the saved policy whose metric (checkpoint.keep_best_by,
    checkpoint.keep_best_mode) is the best so far.

    The policy after n iterations is scored by the metric logged at step n (measured on it: the
    rollout of iteration n, or the evaluation before it; the final evaluation for the last one),
    so it is scored one iteration after it was saved, before the periodic checkpoint may remove it.
    Only saved policies (n a multiple of checkpoint.every) can be kept. A plain Callback: Lightning
    runs it before the checkpoint callbacks of the same epoch end."""

    def __init__(self, periodic: IterationCheckpoint, metric: str, mode: str, every: int):
        self.periodic, self.metric, self.mode, self.every = periodic, metric, mode, every
        self.best_value: float | None = None
        self.best_path: str | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(metric=self.metric, mode=self.mode)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.consider(trainer, getattr(pl_module, "last_metrics", {}), trainer.current_epoch)

    def on_train_end(self, trainer, pl_module) -> None:
        self.consider(trainer, getattr(pl_module, "final_metrics", {}), trainer.current_epoch)

    def consider(self, trainer, metrics: dict[str, float], iteration: int) -> None:
        """Keep the policy after `iteration` iterations if its metric is the best so far and it is on disk."""
        value = metrics.get(self.metric)
        if value is None or iteration < 1 or iteration % self.every or not better(float(value), self.best_value,
                                                                                     self.mode):
            return
        folder = Path(self.periodic.dirpath)
        source = folder / iteration_filename(iteration)
        if not source.exists():
            source = folder / (self.periodic.CHECKPOINT_NAME_LAST + self.periodic.FILE_EXTENSION)
        target = folder / (BEST_PREFIX + iteration_filename(iteration))
        if trainer.is_global_zero and source.exists():
            if target.exists():
                target.unlink()
            link_or_copy(source, target)
            if self.best_path and self.best_path != str(target) and Path(self.best_path).is_file():
                Path(self.best_path).unlink()
        self.best_value, self.best_path = float(value), str(target)

    def state_dict(self) -> dict:
        return {"best_value": self.best_value, "best_path": self.best_path}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_value, self.best_path = state_dict["best_value"], state_dict["best_path"]


def checkpoint_callbacks(checkpoint_cfg, dirpath: str | Path) -> list[Callback]:
    """The run's checkpoint callbacks from the `checkpoint` config: the periodic one (first: it
    writes last.ckpt), and the best-by-metric one when checkpoint.keep_best_by is set."""
    periodic = IterationCheckpoint(dirpath, every=checkpoint_cfg.every, keep_last=checkpoint_cfg.keep_last)
    if not checkpoint_cfg.keep_best_by:
        return [periodic]
    best = BestCheckpoint(periodic, str(checkpoint_cfg.keep_best_by), checkpoint_cfg.keep_best_mode,
                          checkpoint_cfg.every)
    return [periodic, best]


# ----------------------------------------------------------------------------------- frozen weights
def without_frozen(state_dict: dict[str, torch.Tensor], module: torch.nn.Module) -> tuple[dict, list[str]]:
    """(state_dict without the entries that are the module's frozen parameters, their names). An
    entry is frozen when it shares memory with a parameter that does not train (requires_grad
    False), which also catches tied aliases (lm_head.weight of tied embeddings)."""
    frozen = {p.data_ptr() for p in module.parameters() if not p.requires_grad and p.numel()}
    omitted = sorted(k for k, v in state_dict.items() if v.numel() and v.data_ptr() in frozen)
    return {k: v for k, v in state_dict.items() if k not in set(omitted)}, omitted


def with_frozen(state_dict: dict[str, torch.Tensor], module: torch.nn.Module, omitted: list[str]) -> dict:
    """state_dict with the `omitted` frozen entries taken from `module` as it is now (built from
    the base policy, as when the checkpoint was written)."""
    if not omitted:
        return state_dict
    current = module.state_dict()
    absent = [name for name in omitted if name not in current]
    if absent:
        raise ValueError(f"the checkpoint omits frozen weights this model does not have: {absent[:3]}")
    return {**{name: current[name] for name in omitted}, **state_dict}


def load_partial(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], omitted: list[str]) -> None:
    """Load state_dict into model, strictly except for the `omitted` (frozen) weights, which the
    model keeps as built."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    not_omitted = sorted(set(missing) - set(omitted))
    if not_omitted or unexpected:
        raise RuntimeError(f"checkpoint does not match the model: missing {not_omitted[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")

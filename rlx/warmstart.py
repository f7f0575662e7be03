"""Supervised warm-start of the base policy, cached under outputs/ and keyed by its config.

With no pretrained weights to download, the default task's base policy is made here: a tiny
model is trained for a few hundred steps on the task's warm-start texts (skewed correct answers
plus near misses), so it already knows several correct answers per prompt but prefers some.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from rlx.callbacks import StepProgress
from rlx.models import architecture_config, build_model, char_tokenizer, load_pretrained, load_pretrained_model

log = logging.getLogger(__name__)


def warmstart_key(model_cfg: dict, task_cfg: dict, warmstart_cfg: dict, seed: int) -> str:
    """A short hash of everything that determines the warm-started weights."""
    payload = json.dumps({"model": model_cfg, "task": task_cfg, "warmstart": warmstart_cfg, "seed": seed},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def encode_sft_batch(tokenizer, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded <bos> prompt completion <eos> sequences; labels cover only the completion and
    its EOS (-100 elsewhere), so the model learns answers, not prompts."""
    rows, label_rows = [], []
    for prompt, completion in pairs:
        prompt_ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False).input_ids
        completion_ids = tokenizer(completion, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        rows.append(prompt_ids + completion_ids)
        label_rows.append([-100] * len(prompt_ids) + completion_ids)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(zip(rows, label_rows)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention_mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


class WarmStartData(IterableDataset):
    """An endless stream of freshly sampled warm-start batches (seeded, so reproducible)."""

    def __init__(self, task, tokenizer, batch_size: int, seed: int):
        self.task, self.tokenizer, self.batch_size, self.seed = task, tokenizer, batch_size, seed

    def __iter__(self):
        rng = random.Random(self.seed)
        while True:
            yield encode_sft_batch(self.tokenizer, self.task.warmstart_texts(rng, self.batch_size))


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to 0 at total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmStartModule(L.LightningModule):
    """Next-token cross-entropy on completions; AdamW with warm-up and cosine decay."""

    def __init__(self, model, lr: float, warmup_steps: int, total_steps: int):
        super().__init__()
        self.model = model
        self.lr, self.warmup_steps, self.total_steps = lr, warmup_steps, total_steps

    def training_step(self, batch, batch_idx):
        loss = self.model(**batch).loss
        self.log("warmstart/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, self.warmup_steps, self.total_steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def train_base_policy(task, model_cfg, warmstart_cfg, seed: int, out_dir: Path) -> None:
    """Train the base policy from scratch and save model + tokenizer to out_dir (atomically)."""
    tokenizer = char_tokenizer(task.alphabet())
    model = build_model(model_cfg, tokenizer, seed=seed)
    module = WarmStartModule(model, warmstart_cfg.lr, warmstart_cfg.warmup_steps, warmstart_cfg.steps)
    data = DataLoader(WarmStartData(task, tokenizer, warmstart_cfg.batch_size, seed), batch_size=None)
    trainer = L.Trainer(
        max_steps=warmstart_cfg.steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,  # Lightning's bar counts epochs (`Epoch 0/-2`); ours counts steps
        callbacks=[StepProgress("warm-start")],
    )
    trainer.fit(module, data)
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(out_dir)
    except OSError:  # another process finished first (out_dir exists, not empty): keep its copy
        if not out_dir.exists():
            raise
        shutil.rmtree(tmp)


def base_policy(task, task_cfg: dict, model_cfg, warmstart_cfg, cache_root: str | Path):
    """The warm-started (model, tokenizer, cache dir), trained once per config, then read from
    the cache; for a pretrained model (model.source != scratch) the checkpoint itself, no warm-start.
    The warm-start has its own seed (warmstart.seed), so RL runs over several seeds
    start from the same base policy, as runs from one pretrained checkpoint would."""
    from omegaconf import OmegaConf

    if model_cfg.source != "scratch":  # a pretrained checkpoint is the base policy
        return load_pretrained_model(model_cfg, cache_root)
    as_dict = lambda c: OmegaConf.to_container(c, resolve=True) if OmegaConf.is_config(c) else dict(c)  # noqa: E731
    seed = warmstart_cfg.seed
    key = warmstart_key(architecture_config(as_dict(model_cfg)), as_dict(task_cfg), as_dict(warmstart_cfg), seed)
    out_dir = Path(cache_root) / f"{task.name}-{key}"
    if not out_dir.exists():
        print(f"warm-start: training the base policy once ({warmstart_cfg.steps} steps); cached at {out_dir}")
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        train_base_policy(task, model_cfg, warmstart_cfg, seed, out_dir)
    else:
        log.info("warm-start: using cached base policy %s", out_dir)
    model, tokenizer = load_pretrained(str(out_dir))
    return model, tokenizer, out_dir

"""Lightning callbacks: progress over RL iterations (and warm-start steps), as a bar on a terminal
and as plain lines in a log (stdout not a terminal: one line every few iterations)."""

from __future__ import annotations

import sys
import time

import lightning as L
from tqdm.auto import tqdm

PLAIN_LINES = 20  # a non-terminal log gets about this many progress lines per run


def plain_every(total: int, lines: int = PLAIN_LINES) -> int:
    """Print every N iterations so that a run of `total` writes about `lines` lines."""
    return max(1, -(-int(total) // lines))


def iteration_line(done: int, total: int, metrics: dict[str, float], elapsed_s: float) -> str:
    """`iteration 20/100  reward 0.412  entropy 0.873  dH -12%  41 s` (one plain progress line)."""
    get = lambda k: metrics.get(k, float("nan"))  # noqa: E731
    return (f"iteration {done}/{total}  reward {get('train/reward_mean'):.3f}  entropy {get('train/entropy'):.3f}  "
            f"dH {get('train/entropy_change_pct'):+.0f}%  {elapsed_s:.0f} s")


class IterationProgress(L.Callback):
    """One bar for the whole run (iterations, with reward and entropy of the last one) on a
    terminal; in a log file, a plain line every few iterations instead of tqdm's redraws."""

    def __init__(self, plain: bool | None = None):
        self.plain = (not sys.stdout.isatty()) if plain is None else plain

    def on_train_start(self, trainer, pl_module):
        self.start, self.every = time.monotonic(), plain_every(trainer.max_epochs)
        if not self.plain:
            self.bar = tqdm(total=trainer.max_epochs, initial=trainer.current_epoch, desc="RL iterations",
                            dynamic_ncols=True)

    def on_train_epoch_end(self, trainer, pl_module):
        m = pl_module.last_metrics
        done, total = trainer.current_epoch + 1, trainer.max_epochs
        if self.plain:
            if done % self.every == 0 or done == total:
                print(iteration_line(done, total, m, time.monotonic() - self.start), flush=True)
            return
        self.bar.set_postfix(
            reward=f"{m.get('train/reward_mean', float('nan')):.3f}",
            entropy=f"{m.get('train/entropy', float('nan')):.3f}",
            dH=f"{m.get('train/entropy_change_pct', float('nan')):+.0f}%",
            refresh=False,
        )
        self.bar.update(1)

    def on_train_end(self, trainer, pl_module):
        if hasattr(self, "bar"):
            self.bar.close()

    def on_exception(self, trainer, pl_module, exception):
        if hasattr(self, "bar"):
            self.bar.close()


class StepProgress(L.Callback):
    """Progress of a step-counted fit (the warm-start): `step 150/600` with the loss, as a bar on a
    terminal or a plain line every few steps in a log (Lightning's own bar counts epochs)."""

    def __init__(self, desc: str, plain: bool | None = None):
        self.desc = desc
        self.plain = (not sys.stdout.isatty()) if plain is None else plain

    def on_train_start(self, trainer, pl_module):
        self.every = plain_every(trainer.max_steps, 10)
        if not self.plain:
            self.bar = tqdm(total=trainer.max_steps, desc=self.desc, dynamic_ncols=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step, total = trainer.global_step, trainer.max_steps
        loss = float(outputs["loss"]) if isinstance(outputs, dict) and "loss" in outputs else float("nan")
        if self.plain:
            if step % self.every == 0 or step == total:
                print(f"{self.desc}: step {step}/{total}  loss {loss:.3f}", flush=True)
            return
        self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        self.bar.update(step - self.bar.n)

    def on_train_end(self, trainer, pl_module):
        if hasattr(self, "bar"):
            self.bar.close()

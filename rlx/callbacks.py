"""Lightning callbacks: a progress bar over RL iterations."""

from __future__ import annotations

import lightning as L
from tqdm.auto import tqdm


class IterationProgress(L.Callback):
    """One bar for the whole run: iterations, with reward and entropy of the last one."""

    def on_train_start(self, trainer, pl_module):
        self.bar = tqdm(total=trainer.max_epochs, initial=trainer.current_epoch, desc="RL iterations",
                        dynamic_ncols=True)

    def on_train_epoch_end(self, trainer, pl_module):
        m = pl_module.last_metrics
        self.bar.set_postfix(
            reward=f"{m.get('train/reward_mean', float('nan')):.3f}",
            entropy=f"{m.get('train/entropy', float('nan')):.3f}",
            dH=f"{m.get('train/entropy_change_pct', float('nan')):+.0f}%",
            refresh=False,
        )
        self.bar.update(1)

    def on_train_end(self, trainer, pl_module):
        self.bar.close()

    def on_exception(self, trainer, pl_module, exception):
        if hasattr(self, "bar"):
            self.bar.close()

"""The random streams a resumed run must continue exactly: torch (CPU), Python and numpy."""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> dict:
    """The three generators' states; numpy's key array as a list so `torch.load(weights_only=True)`
    (Lightning's default) can read the checkpoint."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": (name, keys.tolist(), int(pos), int(has_gauss), float(cached))}


def restore_rng(state: dict) -> None:
    """Set the three generators to what rng_state() returned."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))

"""The random streams a resumed run must continue exactly: torch (CPU, and CUDA when a GPU is in
use: the samplers draw from it there), Python and numpy."""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> dict:
    """The three generators' states; numpy's key array as a list so `torch.load(weights_only=True)`
    (Lightning's default) can read the checkpoint."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (name, keys.tolist(), int(pos), int(has_gauss), float(cached))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Set the generators to what rng_state() returned (CUDA's when it was saved and a GPU is here)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))

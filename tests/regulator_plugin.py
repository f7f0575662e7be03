"""A regulator written outside the rlx package, loaded by import path in tests/test_regulators.py:
algorithm.regulator.name=regulator_plugin:CountingRegulator."""

from __future__ import annotations

import torch

from rlx.regulators import Regulator


class CountingRegulator(Regulator):
    """Scales every advantage by `scale`, counts its hook calls and logs them."""

    def __init__(self, scale: float = 1.0, clip_ratio_high: float | None = None):
        if scale <= 0:
            raise ValueError(f"scale={scale!r}: must be > 0")
        self.scale, self.clip_ratio_high = float(scale), clip_ratio_high
        self.calls = {"start": 0, "rollout_advantages": 0, "advantages": 0, "loss_overrides": 0, "update": 0}
        self.entropies: list[float] = []

    def start(self, entropy0: float) -> None:
        self.calls["start"] += 1

    def rollout_advantages(self, token_advantages, old_logprobs, entropy, mask) -> torch.Tensor:
        self.calls["rollout_advantages"] += 1
        return token_advantages

    def advantages(self, advantages, logprobs, mask) -> torch.Tensor:
        self.calls["advantages"] += 1
        return advantages * self.scale

    def loss_overrides(self) -> dict:
        self.calls["loss_overrides"] += 1
        return {} if self.clip_ratio_high is None else {"clip_ratio_high": self.clip_ratio_high}

    def update(self, entropy: float) -> dict[str, float]:
        self.calls["update"] += 1
        self.entropies.append(entropy)
        return {"plugin/updates": float(self.calls["update"]), "plugin/entropy": entropy}

    def state_dict(self) -> dict:
        return {"calls": dict(self.calls), "entropies": list(self.entropies)}

    def load_state_dict(self, state: dict) -> None:
        self.calls, self.entropies = dict(state["calls"]), list(state["entropies"])

"""The entropy-regulator plug-in interface: the hooks the learner calls in every iteration.

One iteration, in order (see docs/method.md for each regulator's formulas):

    start(entropy0)                  once per run: the first iteration's rollout entropy
    rollout_advantages(A, lp, H, m)  once per iteration, before the update, on the whole batch
    loss_overrides()                 before every optimizer step: keys for the policy loss
    advantages(A, lp, m)             for every micro-batch of every optimizer step (a minibatch
                                     that fits one micro-batch: once per minibatch), and once per
                                     iteration on the whole batch for the Theorem-1 monitor
    update(entropy)                  once per iteration, after the update, with the mean token
                                     entropy of this iteration's rollout under the policy that
                                     sampled it (pre-update); returns metrics
    state_dict() / load_state_dict() saved in every checkpoint, restored by resume=last

A regulator never sees Lightning, Hydra or MLflow: tensors in, tensors or floats out.
"""

from __future__ import annotations

import torch


class Regulator:
    """Base class: every hook is the identity / a no-op, so a subclass overrides only what it needs.

    Options are the keyword arguments of the subclass's constructor: every key of
    `algorithm.regulator` except `name` is passed to it. A constructor raises ValueError with
    "<option>=<value> ...: <what is allowed>" for a bad value; the config check turns that into
    a one-line error naming `algorithm.regulator.<option>` before any model is built.
    """

    #: True when rollout_advantages needs the rollout policy's log-probs and entropy before the
    #: update (they then come from a separate no-grad pass, not from the first step's forward).
    needs_rollout_statistics: bool = False

    def start(self, entropy0: float) -> None:
        """Called once per run with the mean token entropy of the first rollout batch."""

    def rollout_advantages(self, token_advantages: torch.Tensor, old_logprobs: torch.Tensor,
                           entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[N, T] per-token advantages fixed for the whole iteration (identity by default).
        old_logprobs / entropy are the rollout policy's (zeros unless needs_rollout_statistics)."""
        return token_advantages

    def advantages(self, advantages: torch.Tensor, logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[n, T] advantages shaped with the current policy's log-probs (identity by default).
        Must act row by row (token by token), so how rows are split into steps does not matter."""
        return advantages

    def loss_overrides(self) -> dict:
        """Policy-loss keys to use instead of the configured ones for the next optimizer step."""
        return {}

    def update(self, entropy: float) -> dict[str, float]:
        """Once per iteration after the update, with the rollout's (pre-update) mean token entropy;
        returns metrics logged under exactly these names."""
        return {}

    def state_dict(self) -> dict:
        """Everything that changes during training (restored by load_state_dict)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict returned."""


class ControlledRegulator(Regulator):
    """A regulator driven by one controller of rlx.control (target = target_ratio x entropy0).

    update() moves the controller once and logs `control/<metric_name>` (the knob's value),
    `control/target_entropy` and `control/at_bound` (1 when the knob sits at a limit of its range).
    """

    metric_name: str = ""

    def __init__(self, controller):
        self.controller = controller

    def start(self, entropy0: float) -> None:
        """The controller's target = target_ratio x entropy0."""
        self.controller.set_target(entropy0)

    def update(self, entropy: float) -> dict[str, float]:
        """One controller step from the rollout entropy."""
        value = self.controller.update(entropy)
        return {f"control/{self.metric_name}": float(value), "control/target_entropy": float(self.controller.target),
                "control/at_bound": float(self.controller.at_bound)}

    def state_dict(self) -> dict:
        return self.controller.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.controller.load_state_dict(state)

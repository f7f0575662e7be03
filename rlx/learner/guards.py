"""Guards that stop a run which can no longer learn, with a one-line reason.

Each guard reads one iteration's metrics and counts how many iterations in a row looked broken;
at its patience it raises RunStopped (the run ends FAILED with the reason as a tag, its last
checkpoint intact). Their streaks are saved in every checkpoint, so a resumed run counts on.

  NonfiniteGuard     every optimizer step of the iteration had a NaN/inf loss or gradient
  RewardGuard        every sample's reward failed (raised, timed out, was not a finite number)
  DivergenceGuard    the policy became near-uniform from well below it, or its gradient vanished
                     while the advantages did not: a diverged policy whose loss is still finite

The divergence signals are chosen so that no healthy run can trip them (docs/method.md,
"Divergence guard"): entropy near ln|V| means the policy is close to uniform over the whole
vocabulary (no task rewards that), and an exactly-zero gradient with non-zero advantages means
the log-probs no longer depend on the weights (saturated softmax or dead activations).
"""

from __future__ import annotations

import math


class RunStopped(RuntimeError):
    """A guard stopped the run; str(exc) is the one-line reason."""


class StreakGuard:
    """Counts consecutive broken iterations; `check` raises RunStopped at `patience`."""

    name = "guard"

    def __init__(self, patience: int):
        self.patience = patience
        self.streak = 0

    def broken(self, metrics: dict[str, float]) -> str | None:
        """Why this iteration looks broken (None: it does not)."""
        raise NotImplementedError

    def check(self, metrics: dict[str, float], iteration: int) -> None:
        """Count this iteration; raise RunStopped after `patience` broken ones in a row."""
        reason = self.broken(metrics)
        self.streak = self.streak + 1 if reason else 0
        if reason and self.streak >= self.patience:
            raise RunStopped(f"{reason} in {self.patience} iteration(s) in a row (up to iteration {iteration}); "
                             f"{self.advice}")

    advice = "resume from the last checkpoint after fixing the cause"


class NonfiniteGuard(StreakGuard):
    """Every optimizer step of the iteration skipped for a non-finite loss or gradient."""

    name = "nonfinite"
    advice = "resume from the last checkpoint with a lower optim.lr"

    def broken(self, metrics: dict[str, float]) -> str | None:
        if metrics["train/nonfinite_skips"] and not metrics["train/optimizer_steps"]:
            return "loss or gradient was NaN/inf in every optimizer step"
        return None


class RewardGuard(StreakGuard):
    """Every sample's reward failed: train/reward_errors = the number of samples."""

    name = "reward"
    advice = "check the task's reward function (the first error of each iteration is in the log)"

    def __init__(self, patience: int, samples_per_iteration: int):
        super().__init__(patience)
        self.samples = samples_per_iteration

    def broken(self, metrics: dict[str, float]) -> str | None:
        if metrics.get("train/reward_errors", 0.0) >= self.samples:
            return f"the reward failed on every one of the {self.samples} samples"
        return None


def max_entropy(vocab_size: int) -> float:
    """The entropy of the uniform distribution over the vocabulary: ln |V| nats."""
    return math.log(vocab_size)


class DivergenceGuard(StreakGuard):
    """A diverged policy with a finite loss:

    near-uniform:    H >= uniform_frac * ln|V| while H0 <= start_frac * ln|V|
                     (H: train/entropy, and train/entropy_after when the monitor measures it)
    dead gradient:   train/grad_norm < 1e-12 while train/advantage_abs_mean > 1e-6
    """

    name = "divergence"
    advice = ("the policy diverged; resume from the last checkpoint with a lower optim.lr "
              "(or a smaller algorithm.clip_ratio_high / entropy coefficient)")

    def __init__(self, patience: int, vocab_size: int, uniform_frac: float = 0.95, start_frac: float = 0.75):
        super().__init__(patience)
        self.h_max = max_entropy(vocab_size)
        self.uniform_frac, self.start_frac = uniform_frac, start_frac
        self.entropy0: float | None = None

    def broken(self, metrics: dict[str, float]) -> str | None:
        if self.entropy0 is None and "train/entropy" in metrics:
            self.entropy0 = metrics["train/entropy"]
        entropy = max(metrics.get("train/entropy", 0.0), metrics.get("train/entropy_after", 0.0))
        started_low = self.entropy0 is not None and self.entropy0 <= self.start_frac * self.h_max
        if started_low and entropy >= self.uniform_frac * self.h_max:
            return (f"entropy {entropy:.3f} nats is near the uniform policy's ln|V| = {self.h_max:.3f} "
                    f"(it started at {self.entropy0:.3f})")
        grad_norm = metrics.get("train/grad_norm")
        if grad_norm is not None and grad_norm < 1e-12 and metrics.get("train/advantage_abs_mean", 0.0) > 1e-6:
            return "the gradient norm was 0 although the advantages were not"
        return None


class Guards:
    """The run's guards, checked once per iteration on its metrics; their state checkpointed."""

    def __init__(self, vocab_size: int, samples_per_iteration: int, reward_patience: int,
                 divergence_patience: int, nonfinite_patience: int = 3):
        self.nonfinite = NonfiniteGuard(nonfinite_patience)
        self.reward = RewardGuard(reward_patience, samples_per_iteration)
        self.divergence = DivergenceGuard(divergence_patience, vocab_size) if divergence_patience else None

    def all(self) -> list[StreakGuard]:
        return [g for g in (self.nonfinite, self.reward, self.divergence) if g is not None]

    def check(self, metrics: dict[str, float], iteration: int) -> None:
        """Every guard counts this iteration; the first at its patience raises RunStopped."""
        for guard in self.all():
            guard.check(metrics, iteration)

    def state_dict(self) -> dict:
        state = {g.name: g.streak for g in self.all()}
        if self.divergence is not None:
            state["entropy0"] = self.divergence.entropy0
        return state

    def load_state_dict(self, state: dict) -> None:
        for guard in self.all():
            guard.streak = int(state.get(guard.name, 0))
        if self.divergence is not None:
            self.divergence.entropy0 = state.get("entropy0")

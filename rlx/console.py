"""The block a run prints when it ends: what changed (entropy, reward), how good it is (pass@k),
where the entropy controllers ended, and how long it took."""

from __future__ import annotations

import math


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def final_summary(name: str, metrics: dict[str, float], wall_s: float) -> str:
    """A few aligned lines from a run's final metrics (training and final evaluation)."""
    lines = [f"rlx: run '{name}' finished in {wall_s:.0f} s"]
    lines.append(f"  entropy      {_fmt(metrics.get('train/entropy'))}  (change {_fmt(metrics.get('train/entropy_change_pct'), '+.1f')}%"
                 f" from the first iteration)")
    lines.append(f"  reward mean  {_fmt(metrics.get('train/reward_mean'))}")
    passes = sorted((k for k in metrics if k.startswith("eval/pass_at")), key=lambda k: (len(k), k))
    if passes:
        lines.append("  eval         " + "  ".join(f"{k.split('/', 1)[1]} {_fmt(metrics[k])}" for k in passes))
    controls = sorted(k for k in metrics if k.startswith("control/"))
    if controls:
        lines.append("  controllers  " + "  ".join(f"{k.split('/', 1)[1]} {_fmt(metrics[k], '.4g')}" for k in controls))
    return "\n".join(lines)

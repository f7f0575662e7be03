"""Reward functions that misbehave as user code does in the field (tests/test_faults.py)."""

import sys
import time


def exits_or_sleeps(prompt, completion, answer=None, **info):
    """Every third call exits the interpreter, every third sleeps past any sane limit, the rest score."""
    exits_or_sleeps.calls = getattr(exits_or_sleeps, "calls", 0) + 1
    if exits_or_sleeps.calls % 3 == 0:
        sys.exit("a stray sys.exit() in user code")
    if exits_or_sleeps.calls % 3 == 1:
        time.sleep(30)
    return float(completion.strip() == answer)


def always_overflows(prompt, completion, **info):
    """A reward float64 holds but float32 (the training dtype) turns into inf."""
    return 1e39

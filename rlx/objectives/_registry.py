"""Keyword validation for the name -> function registries."""

from __future__ import annotations

import inspect
from typing import Callable


def accepted_kwargs(fn: Callable, skip: int) -> list[str]:
    """Names of fn's parameters after the first `skip` positional ones."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def check_kwargs(fn: Callable, kw: dict, what: str, skip: int) -> None:
    """TypeError naming the unknown keys and the accepted ones."""
    allowed = accepted_kwargs(fn, skip)
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise TypeError(f"{what} does not take key(s) {unknown}; it accepts: {allowed}")

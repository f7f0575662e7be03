"""Entropy regulators as plug-ins: `algorithm.regulator.name` picks one, its other keys configure it.

    name: repo_r                      a built-in: the Regulator subclass in rlx/regulators/repo_r.py
    name: mypkg.regs:MyRegulator      any importable subclass of rlx.regulators.Regulator

Adding a built-in is one module here (and one YAML in conf/algorithm/); nothing else names it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any, Mapping

from rlx.errors import ConfigError
from rlx.regulators.base import ControlledRegulator, Regulator

_PACKAGE_DIR = Path(__file__).parent
_NOT_REGULATORS = {"base"}


def built_in_names() -> list[str]:
    """The modules of this package that define a regulator (each module's name is its regulator's)."""
    return sorted(m.name for m in pkgutil.iter_modules([str(_PACKAGE_DIR)]) if m.name not in _NOT_REGULATORS)


def _only_subclass(module) -> type[Regulator]:
    """The one Regulator subclass defined in a built-in module."""
    found = [obj for obj in vars(module).values() if inspect.isclass(obj) and issubclass(obj, Regulator)
             and obj.__module__ == module.__name__]
    if len(found) != 1:
        raise ConfigError(f"algorithm.regulator.name={module.__name__.rsplit('.', 1)[-1]!r}: its module defines "
                     f"{len(found)} Regulator subclasses, expected exactly one")
    return found[0]


def regulator_class(name: str) -> type[Regulator]:
    """The class named by algorithm.regulator.name: a built-in name or `module.path:ClassName`."""
    if ":" not in name:
        if name not in built_in_names():
            raise ConfigError(f"algorithm.regulator.name={name!r}: allowed {built_in_names()} or an import path "
                         f"'package.module:ClassName'")
        return _only_subclass(importlib.import_module(f"{__name__}.{name}"))
    module_name, _, class_name = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"algorithm.regulator.name={name!r}: cannot import it ({exc})") from None
    if not (inspect.isclass(cls) and issubclass(cls, Regulator)):
        raise ConfigError(f"algorithm.regulator.name={name!r}: not a subclass of rlx.regulators.Regulator")
    return cls


def _options_of(cls: type[Regulator]) -> list[str] | None:
    """The constructor's keyword names (None when it takes **kwargs)."""
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.name != "self"]


def build_regulator(reg_cfg: Mapping[str, Any]) -> Regulator:
    """Construct the regulator of an `algorithm.regulator` node: cls(**every key but name).

    Raises rlx.config.ConfigError with one line naming `algorithm.regulator.<key>` for an unknown
    name, an unknown option or a value the regulator rejects."""
    options = {str(k): v for k, v in dict(reg_cfg).items()}
    name = str(options.pop("name", "none"))
    cls = regulator_class(name)
    allowed = _options_of(cls)
    unknown = sorted(set(options) - set(allowed)) if allowed is not None else []
    if unknown:
        raise ConfigError(f"algorithm.regulator.{unknown[0]}={options[unknown[0]]!r}: not an option of regulator "
                     f"{name!r}; allowed: {allowed}")
    try:
        return cls(**options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"algorithm.regulator.{str(exc).splitlines()[0]}") from None


__all__ = ["ControlledRegulator", "Regulator", "build_regulator", "built_in_names", "regulator_class"]

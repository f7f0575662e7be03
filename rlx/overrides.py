"""Command-line overrides checked before Hydra runs anything: a mistyped config group, group choice
or key becomes one line with the closest name (`algoritm=grpo: no config group or key 'algoritm';
did you mean algorithm?`) instead of Hydra's multi-line error, and rlx-train exits 2.

Only what Hydra itself would reject is reported: keys are looked up in the config composed with
the command line's group choices (the first value of a swept group), `+key=...` adds a key (the
schema check, rlx.config, judges it), and `hydra...` overrides are Hydra's business.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable

from rlx.cli_help import CONF_DIR, choices

SKIP_DIRS = {"hydra"}


def config_groups() -> list[str]:
    """The config groups of conf/ (its folders, e.g. algorithm, algorithm.base, model)."""
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in SKIP_DIRS)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """'; did you mean X?' for the closest candidate (difflib), else ''."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def override_values(override) -> list[Any]:
    """The values of a parsed override: several for a sweep (`a,b`), else one."""
    if override.is_sweep_override():
        try:
            return list(override.sweep_string_iterator())
        except Exception:  # range() / interval() sweeps: not a list of names
            return []
    return [override.value()]


def check_group(override, groups: list[str]) -> str | None:
    """An unknown choice of a config group, as one line (None when every choice exists)."""
    group = override.key_or_group
    known = choices(group)
    for value in override_values(override):
        if isinstance(value, str) and value not in known:
            return (f"{group}={value}: no such {group}{did_you_mean(value, known)} "
                    f"(choices: {', '.join(known)})")
    return None


def missing_key(cfg, key: str) -> str | None:
    """A one-line error when `key` (dotted) is not in `cfg`, with the closest sibling name."""
    from omegaconf import OmegaConf

    node, walked = cfg, []
    for part in key.split("."):
        if not OmegaConf.is_dict(node) or part not in node:
            where = ".".join(walked) or "the top level"
            siblings = list(node.keys()) if OmegaConf.is_dict(node) else []
            if not walked:
                siblings += config_groups()
                return f"{key}: no config group or key {part!r}{did_you_mean(part, siblings)}"
            return f"{key}: no key {part!r} in {where}{did_you_mean(part, siblings)} (add one with +{key}=...)"
        node = node[part]
        walked.append(part)
    return None


def compose_for(group_overrides: list[str]):
    """The config composed with these group choices only (None if Hydra cannot compose it:
    Hydra's own error then comes from the real run)."""
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=group_overrides)
    except Exception:
        return None


def first_choice(override) -> str:
    """`group=first value` of a (possibly swept) group override, as Hydra text."""
    values = override_values(override)
    return f"{override.input_line.split('=', 1)[0]}={values[0] if values else override.value()}"


def check_overrides(argv: list[str]) -> str | None:
    """The first problem with the overrides on an rlx-train command line, as one line, or None."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        args, _ = get_args_parser().parse_known_args(argv)
        parsed = OverridesParser.create().parse_overrides(list(args.overrides or []))
    except Exception:  # a syntax error: Hydra reports it with its own message
        return None
    groups = config_groups()
    mine = [o for o in parsed if not o.key_or_group.startswith("hydra") and not o.is_delete()]
    for o in mine:
        if o.key_or_group in groups:
            error = check_group(o, groups)
            if error:
                return error
    keys = [o for o in mine if o.key_or_group not in groups and not (o.is_add() or o.is_force_add())]
    if not keys:
        return None
    cfg = compose_for([first_choice(o) for o in mine if o.key_or_group in groups])
    if cfg is None:
        return None
    for o in keys:
        error = missing_key(cfg, o.key_or_group)
        if error:
            return error
    return None

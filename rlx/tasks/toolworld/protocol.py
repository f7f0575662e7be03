"""The JSON tool-call protocol: one JSON object per policy turn, one JSON line per observation.

    {"tool":"contacts.find","args":{"name":"ann"}}     call a tool (args may be omitted if none;
                                                       key order is free)
    {"answer":"417"}                                   finish the episode with an answer

Observations are the tool's result (or {"error": "..."}) as compact JSON followed by a newline.
Parsing is `json.loads` on data: nothing the model writes is ever executed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class ProtocolError(Exception):
    """A turn that is not a well-formed call or answer; its message becomes the error observation."""


@dataclass(frozen=True)
class Call:
    tool: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    value: str


def compact(value: Any) -> str:
    """JSON without spaces: what observations and expert actions look like."""
    return json.dumps(value, separators=(",", ":"))


def parse_action(text: str) -> Call | Answer:
    """A policy turn as a Call or an Answer; ProtocolError for anything else (not JSON, not an
    object, both or neither of "tool"/"answer", wrong types, extra keys)."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad json") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("expected an object")
    if ("tool" in obj) == ("answer" in obj):
        raise ProtocolError("expected tool or answer")
    if "answer" in obj:
        if set(obj) != {"answer"}:
            raise ProtocolError("unknown key")
        value = obj["answer"]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ProtocolError("answer must be text or a number")
        return Answer(str(value))
    if not set(obj) <= {"tool", "args"}:
        raise ProtocolError("unknown key")
    tool, args = obj["tool"], obj.get("args", {})
    if not isinstance(tool, str):
        raise ProtocolError("tool must be text")
    if not isinstance(args, dict):
        raise ProtocolError("args must be an object")
    return Call(tool, args)


def call_text(tool: str, args: dict[str, Any] | None = None) -> str:
    """The text of a call as the expert trajectories write it: args first, then the tool
    (`{"args":{"name":"ann"},"tool":"contacts.find"}`). JSON key order is free; arguments first
    put the value copied from the instruction right after it, which a tiny model learns far
    more easily (base pass@1 0.33 instead of 0.20 on held-out level-1 tasks, same warm-start)."""
    return compact({"args": args or {}, "tool": tool})


def answer_text(value: Any) -> str:
    return compact({"answer": str(value)})


def observation_text(result: Any) -> str:
    return compact(result) + "\n"


def error_text(message: str) -> str:
    return observation_text({"error": message})

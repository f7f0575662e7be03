"""Seeded task generator of the tool world: templates by difficulty, their checks and experts.

A task = a random world + a template instance. Its level is the number of tool calls the
expert needs before answering (1, 2 or 3). Its reward is the fraction of its checks that pass
on the final state and answer (AppWorld-style: "did the right thing" and "broke nothing else"),
where the "broke nothing else" checks (kind "unchanged") only count once one of the task's own
checks passes: doing nothing, or answering a guess without looking, earns 0, not the guards.

Experts are scripted policies that read the observations; the warm-start uses them, and, for
the wrong share of its data, runs them on a *perturbed* task (another name or day, the sibling
question, or a guess without looking), so the base policy's mistakes are plausible ones whose
observations are real.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from rlx.tasks.toolworld.apps import CITIES, DAYS, PHONES, WORDS, new_world
from rlx.tasks.toolworld.protocol import answer_text, call_text

ALL_SECTIONS = ("contacts", "events", "notes", "shop")
DONE = "ok"  # what the experts answer after a task that changes the state


@dataclass(frozen=True)
class ToolTask:
    """One generated task: the world it starts from, what the user asked, how it is checked."""

    id: str
    level: int
    template: str
    params: dict[str, Any]
    instruction: str
    world: dict[str, Any]
    checks: tuple[tuple, ...]


# ----------------------------------------------------------------------------------- checks
def _normalise(value: Any) -> str:
    return str(value).strip().lower()


def _other_events(events: list[dict], exclude: set[int]) -> list[dict]:
    return [e for e in events if e["id"] not in exclude]


def check_passes(check: tuple, before: dict, after: dict, answer: str | None) -> bool:
    """One check on (initial world, final world, final answer). Kinds:
    ("answer", v): the answer equals v (case and surrounding space ignored);
    ("unchanged", sections): those sections are exactly as they started;
    ("note_added", text): the old notes intact and exactly one new note, with this text;
    ("order_added", item, qty): the old orders intact and exactly one new order, this one;
    ("balance", v): the shop balance is v;
    ("event_removed", id): event id is gone and every other original event is intact;
    ("event_added", day, title, with): exactly one new event, with these fields."""
    kind, *args = check
    if kind == "answer":
        return answer is not None and _normalise(answer) == _normalise(args[0])
    if kind == "unchanged":
        return all(after[s] == before[s] for s in args[0])
    if kind == "note_added":
        old, new = before["notes"], after["notes"]
        return len(new) == len(old) + 1 and new[: len(old)] == old and new[-1]["text"] == args[0]
    if kind == "order_added":
        old, new = before["shop"]["orders"], after["shop"]["orders"]
        return (len(new) == len(old) + 1 and new[: len(old)] == old
                and (new[-1]["item"], new[-1]["qty"]) == (args[0], args[1]))
    if kind == "balance":
        return after["shop"]["balance"] == args[0]
    if kind == "event_removed":
        ids_after = {e["id"] for e in after["events"]}
        originals = {e["id"] for e in before["events"]}
        return args[0] not in ids_after and (_other_events(before["events"], {args[0]})
                                             == [e for e in after["events"] if e["id"] in originals])
    if kind == "event_added":
        originals = {e["id"] for e in before["events"]}
        new = _other_events(after["events"], originals)
        return len(new) == 1 and (new[0]["day"], new[0]["title"], new[0]["with"]) == tuple(args)
    raise ValueError(f"unknown check kind {kind!r}")


def run_checks(checks, before: dict, after: dict, answer: str | None) -> list[bool]:
    return [check_passes(c, before, after, answer) for c in checks]


GUARDS = ("unchanged",)


def checks_reward(checks, passed: list[bool]) -> float:
    """sum(passed) / len(checks) if at least one non-guard check passed, else 0."""
    if not any(ok for check, ok in zip(checks, passed) if check[0] not in GUARDS):
        return 0.0
    return sum(passed) / len(passed)


# ----------------------------------------------------------------------------------- experts
def _field(observation: Any, key: str) -> Any:
    """observation[key], or the first list element's; "none" when absent (an error came back)."""
    if isinstance(observation, list):
        observation = observation[0] if observation else {}
    if isinstance(observation, dict) and key in observation:
        return observation[key]
    return "none"


def _read_one(tool: str, arg: str, key: str) -> Callable:
    """Expert: call tool(arg=params[arg]), then answer the result's `key`."""
    def expert(p, obs):
        return call_text(tool, {arg: p[arg]}) if not obs else answer_text(_field(obs[0], key))
    return expert


def _on_day(key: str) -> Callable:
    """Expert: list the day's events, look up who the event is with, answer their `key`."""
    def expert(p, obs):
        if not obs:
            return call_text("calendar.list", {"day": p["day"]})
        if len(obs) == 1:
            return call_text("contacts.find", {"name": _field(obs[0], "with")})
        return answer_text(_field(obs[1], key))
    return expert


def _add_note(p, obs):
    return call_text("notes.add", {"text": p["text"]}) if not obs else answer_text(DONE)


def _buy(p, obs):
    return call_text("shop.buy", {"item": p["item"], "qty": p["qty"]}) if not obs else answer_text(DONE)


def _cancel_on_day(p, obs):
    if not obs:
        return call_text("calendar.list", {"day": p["day"]})
    if len(obs) == 1:
        return call_text("calendar.delete", {"id": _field(obs[0], "id")})
    return answer_text(DONE)


def _note_phone(p, obs):
    if not obs:
        return call_text("contacts.find", {"name": p["name"]})
    if len(obs) == 1:
        return call_text("notes.add", {"text": str(_field(obs[0], "phone"))})
    return answer_text(DONE)


def _note_city_on_day(p, obs):
    if len(obs) < 2:
        return _on_day("city")(p, obs)
    if len(obs) == 2:
        return call_text("notes.add", {"text": str(_field(obs[1], "city"))})
    return answer_text(DONE)


def _move_event(p, obs):
    if not obs:
        return call_text("calendar.list", {"day": p["day"]})
    if len(obs) == 1:
        return call_text("calendar.delete", {"id": _field(obs[0], "id")})
    if len(obs) == 2:
        return call_text("calendar.add", {"day": p["day2"], "title": _field(obs[0], "title"),
                                          "with": _field(obs[0], "with")})
    return answer_text(DONE)


# ----------------------------------------------------------------------------------- templates
def _event_on(world: dict, day: int) -> dict:
    return next(e for e in world["events"] if e["day"] == day)


def _sample_name(world, rng):
    return {"name": rng.choice(sorted(world["contacts"]))}


def _sample_day(world, rng):
    day = rng.choice([e["day"] for e in world["events"]])
    return {"day": day, "title": _event_on(world, day)["title"]}


def _sample_move(world, rng):
    params = _sample_day(world, rng)
    busy = {e["day"] for e in world["events"]}
    params["day2"] = rng.choice([d for d in DAYS if d not in busy])
    return params


def _sample_item(world, rng):
    return {"item": rng.choice(sorted(world["shop"]["prices"]))}


def _sample_buy(world, rng):
    return {**_sample_item(world, rng), "qty": rng.randint(1, 3)}


def _sample_text(world, rng):
    taken = {n["text"] for n in world["notes"]}
    return {"text": rng.choice([w for w in WORDS if w not in taken])}


@dataclass(frozen=True)
class Template:
    """A kind of task: how to draw its parameters from a world, say it, check it and solve it.
    `keys` are the parameters a perturbation may redraw; `siblings` take the same parameters."""

    name: str
    level: int
    sample: Callable[[dict, random.Random], dict]
    say: Callable[[dict], str]
    checks: Callable[[dict, dict], list[tuple]]
    expert: Callable[[dict, list], str]
    keys: tuple[str, ...]
    siblings: tuple[str, ...] = field(default=())
    answers: str | None = None  # the kind of value a read task answers (for guesses)


def _contact(world, p, key):
    return world["contacts"][p["name"]][key]


def _on_day_contact(world, p, key):
    return world["contacts"][_event_on(world, p["day"])["with"]][key]


TEMPLATES: dict[str, Template] = {t.name: t for t in [
    Template("phone_of", 1, _sample_name, lambda p: f"phone of {p['name']}?",
             lambda w, p: [("answer", _contact(w, p, "phone")), ("unchanged", ALL_SECTIONS)],
             _read_one("contacts.find", "name", "phone"), ("name",), ("city_of",), "phone"),
    Template("city_of", 1, _sample_name, lambda p: f"city of {p['name']}?",
             lambda w, p: [("answer", _contact(w, p, "city")), ("unchanged", ALL_SECTIONS)],
             _read_one("contacts.find", "name", "city"), ("name",), ("phone_of",), "city"),
    Template("price_of", 1, _sample_item, lambda p: f"price of {p['item']}?",
             lambda w, p: [("answer", w["shop"]["prices"][p["item"]]), ("unchanged", ALL_SECTIONS)],
             _read_one("shop.price", "item", "price"), ("item",), (), "price"),
    Template("add_note", 1, _sample_text, lambda p: f"note {p['text']}",
             lambda w, p: [("note_added", p["text"]), ("unchanged", ("contacts", "events", "shop"))],
             _add_note, ("text",)),
    Template("buy", 1, _sample_buy, lambda p: f"buy {p['qty']} {p['item']}",
             lambda w, p: [("order_added", p["item"], p["qty"]),
                           ("balance", w["shop"]["balance"] - p["qty"] * w["shop"]["prices"][p["item"]]),
                           ("unchanged", ("contacts", "events", "notes"))],
             _buy, ("item", "qty")),
    Template("city_on_day", 2, _sample_day, lambda p: f"city of who i meet on day {p['day']}?",
             lambda w, p: [("answer", _on_day_contact(w, p, "city")), ("unchanged", ALL_SECTIONS)],
             _on_day("city"), ("day",), ("phone_on_day",), "city"),
    Template("phone_on_day", 2, _sample_day, lambda p: f"phone of who i meet on day {p['day']}?",
             lambda w, p: [("answer", _on_day_contact(w, p, "phone")), ("unchanged", ALL_SECTIONS)],
             _on_day("phone"), ("day",), ("city_on_day",), "phone"),
    Template("cancel_on_day", 2, _sample_day, lambda p: f"cancel my {p['title']} on day {p['day']}",
             lambda w, p: [("event_removed", _event_on(w, p["day"])["id"]),
                           ("unchanged", ("contacts", "notes", "shop"))],
             _cancel_on_day, ("day",)),
    Template("note_phone", 2, _sample_name, lambda p: f"note the phone of {p['name']}",
             lambda w, p: [("note_added", _contact(w, p, "phone")), ("unchanged", ("contacts", "events", "shop"))],
             _note_phone, ("name",)),
    Template("note_city_on_day", 3, _sample_day, lambda p: f"note the city of who i meet on day {p['day']}",
             lambda w, p: [("note_added", _on_day_contact(w, p, "city")),
                           ("unchanged", ("contacts", "events", "shop"))],
             _note_city_on_day, ("day",)),
    Template("move_event", 3, _sample_move, lambda p: f"move my {p['title']} on day {p['day']} to day {p['day2']}",
             lambda w, p: [("event_removed", _event_on(w, p["day"])["id"]),
                           ("event_added", p["day2"], p["title"], _event_on(w, p["day"])["with"]),
                           ("unchanged", ("contacts", "notes", "shop"))],
             _move_event, ("day", "day2")),
]}
LEVELS = tuple(sorted({t.level for t in TEMPLATES.values()}))


def templates_of(level: int) -> list[Template]:
    found = [t for t in TEMPLATES.values() if t.level == level]
    if not found:
        raise ValueError(f"no tool-world templates of level {level}; levels are {list(LEVELS)}")
    return found


def generate_task(seed: str, level: int) -> ToolTask:
    """The task of this seed (any string; the same seed gives the same task on every machine)."""
    rng = random.Random(seed)
    world = new_world(rng)
    template = rng.choice(templates_of(level))
    params = template.sample(world, rng)
    return ToolTask(id=seed, level=level, template=template.name, params=params, instruction=template.say(params),
                    world=world, checks=tuple(template.checks(world, params)))


# ----------------------------------------------------------------------------------- perturbations
def _redraw(key: str, params: dict, world: dict, rng: random.Random) -> dict:
    """params with `key` redrawn to another value valid in this world (or unchanged if none)."""
    choices = {
        "name": sorted(world["contacts"]),
        "day": [e["day"] for e in world["events"]],
        "day2": [d for d in DAYS if d not in {e["day"] for e in world["events"]}],
        "item": sorted(world["shop"]["prices"]),
        "qty": [1, 2, 3],
        "text": [w for w in WORDS if w not in {n["text"] for n in world["notes"]}],
    }[key]
    others = [c for c in choices if c != params[key]]
    return {**params, key: rng.choice(others)} if others else dict(params)


def _guess(kind: str, world: dict, rng: random.Random) -> str:
    if kind == "phone":
        return rng.choice(PHONES)
    if kind == "city":
        return rng.choice(CITIES)
    return str(rng.randint(1, 9))


def wrong_expert(task: ToolTask, rng: random.Random) -> Callable[[list], str]:
    """A plausible mistake on `task`: the sibling question, another parameter value, or (read
    tasks) an answer guessed without looking. Returns expert(observations) -> action text."""
    template = TEMPLATES[task.template]
    options = ["redraw"] + (["sibling"] if template.siblings else []) + (["guess"] if template.answers else [])
    choice = rng.choice(options)
    if choice == "guess":
        value = _guess(template.answers, task.world, rng)
        return lambda obs: answer_text(value)
    if choice == "sibling":
        sibling = TEMPLATES[rng.choice(template.siblings)]
        return lambda obs: sibling.expert(task.params, obs)
    params = _redraw(rng.choice(template.keys), task.params, task.world, rng)
    return lambda obs: template.expert(params, obs)


def right_expert(task: ToolTask) -> Callable[[list], str]:
    template = TEMPLATES[task.template]
    return lambda obs: template.expert(task.params, obs)


def parse_observation(text: str) -> Any:
    """An observation line back to JSON (experts read results this way)."""
    try:
        return json.loads(text)
    except ValueError:
        return {"error": text.strip()}


def fresh_world(task: ToolTask) -> dict:
    return copy.deepcopy(task.world)

"""The apps of the tool world: a small in-memory state and the tools that read and change it.

State (plain JSON-able dicts, so a check can compare before and after):
    contacts: {name: {"phone": "417", "city": "oslo"}}
    events:   [{"id": 1, "day": 3, "title": "gym", "with": "bo"}]      (days 1..7, one event a day)
    notes:    [{"id": 1, "text": "milk"}]
    shop:     {"prices": {"pen": 3}, "balance": 34, "orders": [{"id": 1, "item": "pen", "qty": 2}]}
    next_id:  {"events": 4, "notes": 3, "orders": 1}   (ids are never reused, even after a delete)

A tool is a plain function of (state, **args); it mutates only the state it is given and raises
`ToolError` for a call that cannot be served (unknown name, bad value). No tool runs or
evaluates model text: arguments are data, compared and stored, never executed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

NAMES = ("ann", "bo", "cy", "dee", "eve", "flo", "gus", "hal", "ivy", "jo", "kai", "liv", "max", "ned", "oli", "pam")
CITIES = ("oslo", "rome", "lima", "kyiv", "baku", "doha", "riga", "bern")
TITLES = ("lunch", "call", "gym", "demo", "trip", "exam")
ITEMS = ("pen", "cup", "hat", "map", "bag", "ink", "mug", "kit")
WORDS = ("milk", "eggs", "rent", "keys", "tea", "soap", "gift", "bike")
# A directory of phone numbers: values the tiny char model can recognise when it reads them back.
PHONES = ("212", "305", "417", "550", "618", "703", "819", "926", "134", "248", "361", "479", "582", "695", "736", "857")
DAYS = range(1, 8)
MAX_QTY = 9


class ToolError(Exception):
    """A call the app refuses; its message becomes the error observation."""


def new_world(rng: random.Random, n_contacts: int = 4, n_events: int = 3, n_notes: int = 2,
              n_items: int = 4) -> dict[str, Any]:
    """A random world: distinct names, phones, days, words and items; every event is with a
    known contact; the balance covers any purchase of up to 3 of an item."""
    names = rng.sample(NAMES, n_contacts)
    phones = rng.sample(PHONES, n_contacts)
    contacts = {n: {"phone": p, "city": rng.choice(CITIES)} for n, p in zip(names, phones)}
    days = sorted(rng.sample(list(DAYS), n_events))
    titles = rng.sample(TITLES, n_events)
    events = [{"id": i + 1, "day": d, "title": t, "with": rng.choice(names)}
              for i, (d, t) in enumerate(zip(days, titles))]
    notes = [{"id": i + 1, "text": w} for i, w in enumerate(rng.sample(WORDS, n_notes))]
    prices = {item: rng.randint(1, 9) for item in rng.sample(ITEMS, n_items)}
    return {"contacts": contacts, "events": events, "notes": notes,
            "shop": {"prices": prices, "balance": rng.randint(30, 40), "orders": []},
            "next_id": {"events": n_events + 1, "notes": n_notes + 1, "orders": 1}}


def _next_id(state: dict, kind: str) -> int:
    """A fresh id for a new row of `kind` (a counter, so a deleted id is never handed out again)."""
    value = state["next_id"][kind]
    state["next_id"][kind] = value + 1
    return value


def contacts_find(state, name: str) -> dict:
    contact = state["contacts"].get(name)
    if contact is None:
        raise ToolError(f"no contact {name}")
    return dict(contact)


def calendar_list(state, day: int) -> list:
    return [{"id": e["id"], "title": e["title"], "with": e["with"]} for e in state["events"] if e["day"] == day]


def calendar_add(state, day: int, title: str, with_: str) -> dict:
    if day not in DAYS:
        raise ToolError("day must be 1 to 7")
    if with_ not in state["contacts"]:
        raise ToolError(f"no contact {with_}")
    if not title:
        raise ToolError("empty title")
    event = {"id": _next_id(state, "events"), "day": day, "title": title, "with": with_}
    state["events"].append(event)
    return {"id": event["id"]}


def calendar_delete(state, id_: int) -> dict:
    kept = [e for e in state["events"] if e["id"] != id_]
    if len(kept) == len(state["events"]):
        raise ToolError(f"no event {id_}")
    state["events"] = kept
    return {"ok": True}


def notes_search(state, q: str) -> list:
    return [dict(n) for n in state["notes"] if q and q in n["text"]]


def notes_add(state, text: str) -> dict:
    if not text:
        raise ToolError("empty note")
    note = {"id": _next_id(state, "notes"), "text": text}
    state["notes"].append(note)
    return {"id": note["id"]}


def shop_price(state, item: str) -> dict:
    price = state["shop"]["prices"].get(item)
    if price is None:
        raise ToolError(f"no item {item}")
    return {"item": item, "price": price}


def shop_buy(state, item: str, qty: int) -> dict:
    shop = state["shop"]
    price = shop["prices"].get(item)
    if price is None:
        raise ToolError(f"no item {item}")
    if not 1 <= qty <= MAX_QTY:
        raise ToolError(f"qty must be 1 to {MAX_QTY}")
    cost = price * qty
    if cost > shop["balance"]:
        raise ToolError("balance too low")
    shop["balance"] -= cost
    order = {"id": _next_id(state, "orders"), "item": item, "qty": qty}
    shop["orders"].append(order)
    return {"order": order["id"], "cost": cost, "balance": shop["balance"]}


def shop_balance(state) -> dict:
    return {"balance": state["shop"]["balance"]}


@dataclass(frozen=True)
class Tool:
    """A tool: its function, and its parameters as {JSON name: (python keyword, type)}."""

    fn: Callable[..., Any]
    params: dict[str, tuple[str, type]]


TOOLS: dict[str, Tool] = {
    "contacts.find": Tool(contacts_find, {"name": ("name", str)}),
    "calendar.list": Tool(calendar_list, {"day": ("day", int)}),
    "calendar.add": Tool(calendar_add, {"day": ("day", int), "title": ("title", str), "with": ("with_", str)}),
    "calendar.delete": Tool(calendar_delete, {"id": ("id_", int)}),
    "notes.search": Tool(notes_search, {"q": ("q", str)}),
    "notes.add": Tool(notes_add, {"text": ("text", str)}),
    "shop.price": Tool(shop_price, {"item": ("item", str)}),
    "shop.buy": Tool(shop_buy, {"item": ("item", str), "qty": ("qty", int)}),
    "shop.balance": Tool(shop_balance, {}),
}


def call_tool(state: dict, name: str, args: dict) -> Any:
    """Run tool `name` on `state` with JSON `args`; ToolError for an unknown tool, a missing,
    extra or mistyped argument (bool is not an int), or a call the app refuses."""
    tool = TOOLS.get(name)
    if tool is None:
        raise ToolError(f"unknown tool {name}")
    extra = sorted(set(args) - set(tool.params))
    if extra:
        raise ToolError(f"unknown arg {extra[0]}")
    kwargs = {}
    for key, (keyword, kind) in tool.params.items():
        if key not in args:
            raise ToolError(f"missing arg {key}")
        value = args[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ToolError(f"arg {key} must be {'a number' if kind is int else 'text'}")
        kwargs[keyword] = value
    return tool.fn(state, **kwargs)

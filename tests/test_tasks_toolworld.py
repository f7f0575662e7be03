"""The tool world: protocol parsing, tool state transitions, checks, generator and warm-start."""

from __future__ import annotations

import copy
import random

import pytest

from rlx.tasks.base import TURN_END, Prompt
from rlx.tasks.toolworld import ALPHABET, ToolWorldEnv, ToolWorldTask
from rlx.tasks.toolworld.apps import ToolError, call_tool, new_world
from rlx.tasks.toolworld.env import expert_turns
from rlx.tasks.toolworld.generator import (
    LEVELS,
    TEMPLATES,
    ToolTask,
    check_passes,
    generate_task,
    right_expert,
    wrong_expert,
)
from rlx.tasks.toolworld.protocol import Answer, Call, ProtocolError, parse_action


def world():
    return {
        "contacts": {"ann": {"phone": "417", "city": "oslo"}, "bo": {"phone": "222", "city": "rome"}},
        "events": [{"id": 1, "day": 3, "title": "gym", "with": "bo"}, {"id": 2, "day": 5, "title": "call", "with": "ann"}],
        "notes": [{"id": 1, "text": "milk"}],
        "shop": {"prices": {"pen": 3, "cup": 5}, "balance": 30, "orders": []},
        "next_id": {"events": 3, "notes": 2, "orders": 1},
    }


def task(template: str, params: dict, instruction: str = "x") -> ToolTask:
    w = world()
    return ToolTask("t", TEMPLATES[template].level, template, params, instruction, w,
                    tuple(TEMPLATES[template].checks(w, params)))


# ------------------------------------------------------------------------------- protocol
@pytest.mark.parametrize("text,expected", [
    ('{"tool":"contacts.find","args":{"name":"ann"}}', Call("contacts.find", {"name": "ann"})),
    ('{"tool":"shop.balance"}', Call("shop.balance", {})),
    ('{"answer":"417"}', Answer("417")),
    ('{"answer":417}', Answer("417")),
])
def test_parse_well_formed(text, expected):
    assert parse_action(text) == expected


@pytest.mark.parametrize("text", [
    "", "{", "phone of ann", "[1,2]", '"417"', "{}", '{"tool":"a","answer":"b"}', '{"answer":true}',
    '{"answer":["a"]}', '{"tool":5}', '{"tool":"shop.buy","args":[1]}', '{"tool":"x","extra":1}',
    '{"answer":"a","x":1}', "[" * 5000 + "]" * 5000,
])
def test_parse_malformed_raises_protocol_error(text):
    with pytest.raises(ProtocolError):
        parse_action(text)


# ------------------------------------------------------------------------------- tools
def test_reads_leave_the_state_alone():
    state = world()
    assert call_tool(state, "contacts.find", {"name": "ann"}) == {"phone": "417", "city": "oslo"}
    assert call_tool(state, "calendar.list", {"day": 3}) == [{"id": 1, "title": "gym", "with": "bo"}]
    assert call_tool(state, "calendar.list", {"day": 4}) == []
    assert call_tool(state, "notes.search", {"q": "mil"}) == [{"id": 1, "text": "milk"}]
    assert call_tool(state, "shop.price", {"item": "cup"}) == {"item": "cup", "price": 5}
    assert call_tool(state, "shop.balance", {}) == {"balance": 30}
    assert state == world()


def test_writes_change_exactly_their_app():
    state = world()
    assert call_tool(state, "shop.buy", {"item": "pen", "qty": 2}) == {"order": 1, "cost": 6, "balance": 24}
    assert state["shop"]["orders"] == [{"id": 1, "item": "pen", "qty": 2}] and state["shop"]["balance"] == 24
    assert call_tool(state, "notes.add", {"text": "eggs"}) == {"id": 2}
    assert call_tool(state, "calendar.delete", {"id": 1}) == {"ok": True}
    assert call_tool(state, "calendar.add", {"day": 6, "title": "demo", "with": "ann"}) == {"id": 3}
    assert [e["id"] for e in state["events"]] == [2, 3]
    assert state["contacts"] == world()["contacts"]


def test_deleted_ids_are_never_reused():
    state = world()
    call_tool(state, "calendar.delete", {"id": 2})
    assert call_tool(state, "calendar.add", {"day": 1, "title": "gym", "with": "bo"}) == {"id": 3}


@pytest.mark.parametrize("name,args,message", [
    ("contacts.delete", {}, "unknown tool"),
    ("__import__('os').system", {}, "unknown tool"),
    ("contacts.find", {}, "missing arg name"),
    ("contacts.find", {"name": "zed"}, "no contact zed"),
    ("contacts.find", {"name": "ann", "x": 1}, "unknown arg x"),
    ("calendar.list", {"day": "3"}, "arg day must be a number"),
    ("calendar.list", {"day": True}, "arg day must be a number"),
    ("calendar.add", {"day": 9, "title": "gym", "with": "ann"}, "day must be 1 to 7"),
    ("calendar.add", {"day": 2, "title": "gym", "with": "zed"}, "no contact zed"),
    ("calendar.delete", {"id": 7}, "no event 7"),
    ("notes.add", {"text": ""}, "empty note"),
    ("shop.buy", {"item": "pen", "qty": 0}, "qty must be 1 to 9"),
    ("shop.buy", {"item": "cup", "qty": 7}, "balance too low"),
    ("shop.price", {"item": "car"}, "no item car"),
])
def test_refused_calls_raise_and_change_nothing(name, args, message):
    state = world()
    with pytest.raises(ToolError, match=message):
        call_tool(state, name, args)
    assert state == world()


# ------------------------------------------------------------------------------- environment
def test_malformed_and_refused_calls_give_error_observations_and_the_episode_goes_on():
    env = ToolWorldEnv(task("phone_of", {"name": "ann"}, "phone of ann?"))
    assert env.reset() == "phone of ann?\n"
    for action in ["not json", '{"tool":"contacts.find","args":{"name":"zed"}}', '{"tool":"rm -rf /"}', ""]:
        result = env.step(action)
        assert not result.done and result.reward == 0.0
        assert result.observation.startswith('{"error":') and result.observation.endswith("\n")
    result = env.step('{"tool":"contacts.find","args":{"name":"ann"}}')
    assert result.observation == '{"phone":"417","city":"oslo"}\n' and not result.done
    result = env.step('{"answer":"417"}')
    assert result.done and result.reward == 1.0 and result.info["checks"] == [True, True]


def test_reward_is_the_fraction_of_checks_passed():
    env = ToolWorldEnv(task("buy", {"item": "pen", "qty": 2}))
    env.reset()
    env.step('{"tool":"shop.buy","args":{"item":"pen","qty":1}}')  # wrong quantity: balance and order wrong
    assert env.step('{"answer":"ok"}').reward == 0.0  # the guard alone ("nothing else changed") earns nothing
    env.reset()
    env.step('{"tool":"shop.buy","args":{"item":"pen","qty":1}}')
    env.step('{"tool":"shop.buy","args":{"item":"pen","qty":1}}')  # two orders of 1: order check fails
    assert env.step('{"answer":"ok"}').reward == pytest.approx(2 / 3)  # balance right (2 x 3), unchanged right
    env.reset()
    env.step('{"tool":"shop.buy","args":{"item":"pen","qty":2}}')
    env.step('{"tool":"notes.add","args":{"text":"oops"}}')  # collateral damage
    assert env.step('{"answer":"ok"}').reward == pytest.approx(2 / 3)
    env.reset()
    assert env.step('{"answer":"ok"}').reward == 0.0  # did nothing


def test_wrong_answer_on_a_read_task_keeps_the_unchanged_check():
    env = ToolWorldEnv(task("city_of", {"name": "bo"}))
    env.reset()
    assert env.step('{"answer":"ROME "}').reward == 1.0  # case and spaces ignored
    env.reset()
    assert env.step('{"answer":"oslo"}').reward == 0.0
    env.reset()
    env.step('{"tool":"notes.add","args":{"text":"x"}}')
    assert env.step('{"answer":"rome"}').reward == 0.5  # right answer, but a note was written


def test_reset_restores_the_initial_world():
    env = ToolWorldEnv(task("add_note", {"text": "eggs"}))
    env.reset()
    env.step('{"tool":"notes.add","args":{"text":"eggs"}}')
    assert env.reset() and env.state == world()


def test_event_checks():
    w0 = world()
    w1 = copy.deepcopy(w0)
    call_tool(w1, "calendar.delete", {"id": 1})
    call_tool(w1, "calendar.add", {"day": 6, "title": "gym", "with": "bo"})
    assert check_passes(("event_removed", 1), w0, w1, None)
    assert check_passes(("event_added", 6, "gym", "bo"), w0, w1, None)
    assert not check_passes(("event_added", 7, "gym", "bo"), w0, w1, None)
    assert not check_passes(("event_removed", 2), w0, w1, None)


# ------------------------------------------------------------------------------- generator
@pytest.mark.parametrize("level", LEVELS)
def test_the_expert_solves_every_task_and_mistakes_cost(level):
    rng = random.Random(level)
    wrong = []
    for i in range(60):
        t = generate_task(f"test:{level}:{i}", level)
        assert len(t.checks) >= 2
        for expert, out in ((right_expert(t), None), (wrong_expert(t, rng), wrong)):
            first, turns = expert_turns(t, expert, max_turns=level + 1)
            env = ToolWorldEnv(t)
            env.reset()
            results = [env.step(action) for action, _ in turns]
            assert results[-1].done
            if out is None:
                assert results[-1].reward == 1.0 and len(turns) == level + 1, (t, turns)
            else:
                out.append(results[-1].reward)
    assert sum(r < 1 for r in wrong) > 0.6 * len(wrong)


def test_generator_is_seeded_and_splits_are_disjoint():
    assert generate_task("s:1:0", 1) == generate_task("s:1:0", 1)
    assert generate_task("s:1:0", 1) != generate_task("s:1:1", 1)
    tw = ToolWorldTask(levels=[1, 2], n_train=40, n_eval=10)
    train = {p.info["task_id"] for p in tw.train_prompts()}
    heldout = {p.info["task_id"] for p in tw.eval_prompts()["eval"]}
    assert len(train) == 80 and len(heldout) == 20 and not train & heldout
    assert {p.info["level"] for p in tw.train_prompts()} == {1, 2}
    assert {tw.task_of(p).instruction for p in tw.train_prompts()} >= {p.text for p in tw.train_prompts()}


def test_bad_level_is_refused():
    with pytest.raises(ValueError, match="level 7"):
        ToolWorldTask(levels=[7])


def test_env_for_a_prompt_plays_that_task():
    tw = ToolWorldTask(n_train=5, n_eval=2)
    prompt = tw.train_prompts()[3]
    assert tw.make_env(prompt).reset() == prompt.text + "\n"
    unknown = Prompt("?", {"task_id": "elsewhere:1", "level": 1})
    assert tw.make_env(unknown).reset() == generate_task("elsewhere:1", 1).instruction + "\n"


def test_warmstart_pairs_are_turn_contexts_in_the_alphabet():
    tw = ToolWorldTask(n_train=5, n_eval=2, warmstart_mix={1: 0.5, 2: 0.5})
    pairs = tw.warmstart_texts(random.Random(0), 400)
    assert len(pairs) == 400
    for context, action in pairs:
        assert set(context.replace(TURN_END, "")) <= set(ALPHABET) and set(action) <= set(ALPHABET)
        assert isinstance(parse_action(action), (Call, Answer))
        turns = context.count(TURN_END)
        assert context.endswith("\n")  # instruction or observation line
        if turns:
            assert context.split(TURN_END)[0].split("\n", 1)[1].startswith('{"args"')
    assert any(TURN_END in c for c, _ in pairs) and any(TURN_END not in c for c, _ in pairs)


def test_world_texts_stay_in_the_alphabet():
    rng = random.Random(0)
    for _ in range(50):
        w = new_world(rng)
        for name in w["contacts"]:
            assert set(name + w["contacts"][name]["city"]) <= set(ALPHABET)


def test_checks_reward_gates_the_guards():
    from rlx.tasks.toolworld.generator import checks_reward

    checks = (("answer", "1"), ("unchanged", ("notes",)))
    assert checks_reward(checks, [True, True]) == 1.0
    assert checks_reward(checks, [True, False]) == 0.5
    assert checks_reward(checks, [False, True]) == 0.0
    assert checks_reward((("note_added", "x"), ("balance", 3), ("unchanged", ())), [False, True, True]) == 2 / 3

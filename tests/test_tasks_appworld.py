"""task=appworld: without the package, one clear line naming what to install; with the package
and its data, a real episode through AppWorld's own sandbox (skipped, not faked, otherwise)."""

from __future__ import annotations

import importlib.util

import pytest

from rlx.build import instantiate_task
from rlx.config import ConfigError
from rlx.tasks.appworld import INSTALL_HINT, code_of
from rlx.train import train

HAS_APPWORLD = importlib.util.find_spec("appworld") is not None


def test_code_of_a_turn():
    assert code_of("look:\n```python\nprint(1)\n```\nthen") == "print(1)\n"
    assert code_of("```\nx = 2\n```") == "x = 2\n"
    assert code_of("print(apis.api_docs.show_app_descriptions())") == "print(apis.api_docs.show_app_descriptions())"


@pytest.mark.skipif(HAS_APPWORLD, reason="appworld is installed")
def test_missing_package_fails_with_one_line_naming_what_to_install(make_config):
    cfg = make_config("task=appworld")
    with pytest.raises(ConfigError) as info:
        instantiate_task(cfg.task)
    assert str(info.value) == INSTALL_HINT and "\n" not in INSTALL_HINT
    assert "pip install appworld" in INSTALL_HINT and "appworld download data" in INSTALL_HINT
    with pytest.raises(ConfigError, match="pip install appworld"):
        train(cfg)  # before any model is built; rlx-train prints it as one line and exits 2


def appworld_data_or_skip():
    if not HAS_APPWORLD:
        pytest.skip("appworld is not installed (pip install appworld && appworld install && appworld download data)")
    import appworld

    try:
        ids = list(appworld.load_task_ids("dev"))
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"appworld data is not downloaded (appworld download data): {exc}")
    if not ids:
        pytest.skip("appworld has no dev tasks")
    return ids


def test_appworld_episode_in_its_sandbox():
    appworld_data_or_skip()
    from rlx.tasks.appworld import AppWorldTask

    task = AppWorldTask(split="dev", eval_split="dev", limit=1, eval_limit=1, experiment_name="rlx-test")
    env = task.make_env(task.train_prompts()[0])
    try:
        first = env.reset()
        assert "Task:" in first
        result = env.step("```python\nprint(1 + 1)\n```")
        assert "2" in result.observation and not result.done
        result = env.step("apis.supervisor.complete_task()")
        assert result.done and 0.0 <= result.reward <= 1.0 and "num_tests" in result.info
    finally:
        env.close()

"""AppWorld (Trivedi et al. 2024) as a multi-turn task, when the `appworld` package and its data
are installed (the data is a separate download):

    pip install appworld && appworld install && appworld download data
    rlx-train task=appworld model=qwen3_8b ...

Each policy turn is Python code (a ```python block, or the whole turn) that goes to AppWorld's
own execution sandbox (`world.execute`); its output is the next observation. The episode ends
when the code calls `apis.supervisor.complete_task(...)`; the reward is the fraction of the
task's evaluation tests that pass (`world.evaluate()`), so success = reward 1. rlx never runs
the model's code itself. An episode cut off by the turn or token caps scores 0.

AppWorld needs a pretrained model with its own tokenizer: there is no character alphabet and no
warm-start data for it.
"""

from __future__ import annotations

import re
from typing import Any

from rlx.config import ConfigError
from rlx.tasks.base import Environment, MultiTurnTask, Prompt, StepResult

INSTALL_HINT = ("task=appworld needs the AppWorld package and its data: "
                "pip install appworld && appworld install && appworld download data")
_CODE_BLOCK = re.compile(r"```(?:python)?\n(.*?)```", re.DOTALL)

INSTRUCTIONS = (
    "You are an agent operating apps for your supervisor {first_name} {last_name} "
    "({email}, {phone_number}) through the AppWorld Python APIs. Each turn, write Python code; "
    "its output is shown to you. Look up APIs with apis.api_docs.show_app_descriptions(), "
    "apis.api_docs.show_api_descriptions(app_name=...) and apis.api_docs.show_api_doc(app_name=..., "
    "api_name=...). When the task is done call apis.supervisor.complete_task(answer=...) (answer only "
    "if the task asks a question).\nTask: {instruction}\n"
)


def require_appworld():
    """The appworld module, or ConfigError with the one-line install hint."""
    try:
        import appworld
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc
    return appworld


def code_of(action: str) -> str:
    """The Python code of a turn: the first ```python block if there is one, else the turn."""
    match = _CODE_BLOCK.search(action)
    return match.group(1) if match else action


class AppWorldEnv(Environment):
    """One AppWorld task; the world is opened on reset and closed when the episode ends."""

    def __init__(self, task_id: str, experiment_name: str):
        self.task_id, self.experiment_name = task_id, experiment_name
        self.world = None

    def reset(self) -> str:
        appworld = require_appworld()
        self.close()
        self.world = appworld.AppWorld(task_id=self.task_id, experiment_name=self.experiment_name)
        task = self.world.task
        supervisor = dict(task.supervisor) if not isinstance(task.supervisor, dict) else task.supervisor
        fields = {k: supervisor.get(k, "") for k in ("first_name", "last_name", "email", "phone_number")}
        return INSTRUCTIONS.format(instruction=task.instruction, **fields)

    def step(self, action: str) -> StepResult:
        output = self.world.execute(code_of(action))
        if not self.world.task_completed():
            return StepResult(str(output) + "\n", 0.0, False, {})
        result = self.world.evaluate()
        reward = float(result.pass_percentage) / 100.0
        self.close()
        return StepResult("", reward, True, {"success": bool(result.success), "num_tests": result.num_tests})

    def close(self) -> None:
        if self.world is not None:
            self.world.close()
            self.world = None


class AppWorldTask(MultiTurnTask):
    """AppWorld's task ids of `split` for training, of `eval_split` for evaluation
    (train | dev | test_normal | test_challenge); `limit` / `eval_limit` keep the first n."""

    def __init__(self, name: str = "appworld", split: str = "train", eval_split: str = "dev",
                 limit: int | None = None, eval_limit: int | None = 32, experiment_name: str = "rlx",
                 max_turns: int = 20, max_turn_tokens: int | None = 1024, max_total_tokens: int = 16384):
        appworld = require_appworld()
        self.name, self.experiment_name = name, experiment_name
        self.max_turns, self.max_turn_tokens, self.max_total_tokens = max_turns, max_turn_tokens, max_total_tokens
        try:
            self._train_ids = list(appworld.load_task_ids(split))[:limit]
            self._eval_ids = list(appworld.load_task_ids(eval_split))[:eval_limit]
        except Exception as exc:  # noqa: BLE001 - the package is there but its data is not
            raise ConfigError(f"task=appworld: cannot load the task ids of split {split!r}/{eval_split!r} "
                              f"({type(exc).__name__}: {exc}); download the data: appworld download data") from exc

    @staticmethod
    def _prompt(task_id: str, split: str) -> Prompt:
        return Prompt(task_id, {"task_id": task_id, "split": split})

    def train_prompts(self) -> list[Prompt]:
        return [self._prompt(t, "train") for t in self._train_ids]

    def eval_prompts(self) -> dict[str, list[Prompt]]:
        return {"eval": [self._prompt(t, "heldout") for t in self._eval_ids]}

    def make_env(self, prompt: Prompt) -> AppWorldEnv:
        return AppWorldEnv(prompt.info["task_id"], self.experiment_name)

    def alphabet(self) -> str:
        raise ConfigError("task=appworld needs a pretrained model with its own tokenizer (e.g. model=qwen3_8b), "
                          "not a from-scratch character model")

    def warmstart_texts(self, rng: Any, n: int):
        raise ConfigError("task=appworld has no warm-start data: use a pretrained model (e.g. model=qwen3_8b)")

"""What the README shows a researcher works as printed: the objectives in a plain PyTorch loop
(the snippet is read out of README.md and run), the worked example's reward file and prompts load
through task=custom, the worked-example command composes, and the charts view the README
describes is on every experiment rlx makes."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LOOP_HEADING = "### The objectives in your own PyTorch loop"
EXAMPLE_HEADING = "### Worked example: your reward, your prompts, SmolLM2-135M"


def section(heading: str) -> str:
    """The README text under `heading`, up to the next heading of the same or a higher level."""
    text = README.read_text(encoding="utf-8")
    start = text.index(heading + "\n")
    level = heading.split()[0]
    rest = text[start + len(heading) + 1:]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.M | re.S)


def test_readme_loop_snippet_trains_a_model(monkeypatch, capsys):
    """The first python block under LOOP_HEADING, run as is: a finite loss, a metric per
    printed step, and every parameter of the policy moved by the optimizer."""
    (snippet,) = code_blocks(section(LOOP_HEADING), "python")[:1]
    initial: list[torch.Tensor] = []

    class RecordingAdamW(torch.optim.AdamW):
        def __init__(self, params, *args, **kwargs):
            params = list(params)
            initial.extend(p.detach().clone() for p in params)
            super().__init__(params, *args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    scope: dict = {"__name__": "readme_snippet"}
    exec(compile(snippet, f"{README}:{LOOP_HEADING}", "exec"), scope)  # noqa: S102 - our own README

    loss, metrics, policy = scope["loss"], scope["metrics"], scope["policy"]
    assert loss.dim() == 0 and math.isfinite(loss.item())
    assert {"entropy", "clipfrac_low", "clipfrac_high", "pg_loss"} <= set(metrics)
    assert 0 < metrics["entropy"].item() <= math.log(16) + 1e-4
    after = [p.detach() for p in policy.parameters()]
    assert initial and len(after) == len(initial)
    assert all(not torch.equal(a, b) for a, b in zip(initial, after))
    assert len(re.findall(r"^step \d+: reward ", capsys.readouterr().out, flags=re.M)) == 3


def example_command() -> list[str]:
    """The worked example's rlx-train command (the first bash block, line continuations joined)."""
    (block,) = code_blocks(section(EXAMPLE_HEADING), "bash")[:1]
    words = shlex.split(block.replace("\\\n", " "), comments=True)
    assert words[0].endswith("rlx-train")
    return words[1:]


def test_example_reward_and_prompts_load_through_the_custom_task(monkeypatch):
    """examples/my_reward.py and examples/prompts.jsonl, named as the README's command names them,
    load through task=custom; the reward scores an exact answer 1, the answer last in a sentence
    0.5, anything else 0."""
    from rlx.tasks.custom import CustomTask

    monkeypatch.chdir(ROOT)  # the command is run from the repository root
    keys = dict(w.split("=", 1) for w in example_command())
    assert keys["task"] == "custom" and keys["model"] == "smollm2_135m"
    task = CustomTask(keys["task.reward_fn"], keys["task.prompts"])
    rows = [json.loads(line) for line in Path(keys["task.prompts"]).read_text().splitlines() if line.strip()]
    prompts = task.train_prompts() + task.eval_prompts()["eval"]
    assert len(prompts) == len(rows) >= 16 and all(p.info.get("answer") for p in prompts)
    p = prompts[0]
    answer = p.info["answer"]
    assert task.reward(p, answer) == 1.0
    assert task.reward(p, f"The answer is {answer}.") == 0.5
    assert task.reward(p, "I do not know.") == 0.0


def test_example_command_composes_and_validates(tmp_path):
    """Every override of the worked-example command is a real key with an allowed value."""
    from conftest import compose_config
    from rlx.config import validate

    cfg = validate(compose_config(tmp_path, tmp_path, *example_command(), debug=False))
    assert cfg.model.name == "smollm2_135m" and cfg.task.name == "custom"
    assert cfg.model.lora.enabled is True


def test_experiments_carry_the_charts_view_the_readme_describes(tmp_path):
    """rlx's saved view (entropy and reward charts first) is a tag of every experiment rlx makes,
    in the envelope MLflow's UI reads; the URL rlx prints opens it in model-training mode."""
    from mlflow.tracking import MlflowClient

    from rlx.store import CHARTS_VIEW_KEY, KEY_CHARTS, SHARED_VIEW_TAG_PREFIX, ensure_experiment
    from rlx.tracking import charts_url

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    new = ensure_experiment(uri, "expression")
    old = client.create_experiment("made-elsewhere")
    ensure_experiment(uri, "made-elsewhere")
    for experiment_id in (new, old):
        envelope = json.loads(client.get_experiment(experiment_id).tags[SHARED_VIEW_TAG_PREFIX + CHARTS_VIEW_KEY])
        assert isinstance(envelope["name"], str) and isinstance(envelope["createdAt"], int)
        state = json.loads(envelope["state"])
        charts = state["compareRunCharts"]
        assert [c["metricKey"] for c in charts][:2] == ["train/entropy", "train/reward_mean"]
        assert [c["metricKey"] for c in charts] == list(KEY_CHARTS)
        (key_section,) = state["compareRunSections"]
        assert all(c["type"] == "LINE" and c["metricSectionId"] == key_section["uuid"] for c in charts)
        assert state["isAccordionReordered"] is True  # the key section stays first
    # a view the user changed in the UI is kept
    client.set_experiment_tag(new, SHARED_VIEW_TAG_PREFIX + CHARTS_VIEW_KEY, "edited")
    ensure_experiment(uri, "expression")
    assert client.get_experiment(new).tags[SHARED_VIEW_TAG_PREFIX + CHARTS_VIEW_KEY] == "edited"
    url = charts_url(new)
    assert url == (f"http://127.0.0.1:5000/#/experiments/{new}/runs?viewStateShareKey={CHARTS_VIEW_KEY}"
                   "&compareRunsMode=CHART&workflowType=machine_learning")
    assert url in README.read_text(encoding="utf-8").replace("<id>", new)


def gpu_recipe() -> str:
    """The README's "**GPU install**" paragraph, up to the next bold paragraph or heading."""
    text = README.read_text(encoding="utf-8")
    rest = text[text.index("**GPU install**"):]
    end = re.search(r"^(\*\*(?!GPU install)|#)", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def test_gpu_recipe_names_real_config_and_the_pinned_torch(tmp_path):
    """The GPU recipe's presets, trainers and rollout exist (presets were renamed once), every
    rlx-train line in it composes and validates, and its torch is the version pyproject pins."""
    import tomllib

    from conftest import compose_config
    from rlx.config import validate

    recipe = gpu_recipe()
    for group, name in re.findall(r"\b(precision|trainer|rollout)=(\w+)", recipe):
        assert (ROOT / "conf" / group / f"{name}.yaml").is_file(), f"{group}={name}"
    pins = [d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
            if d.startswith("torch==")]
    assert pins and f"pip install {pins[0]} --index-url" in recipe
    commands = [line for block in code_blocks(recipe, "bash") for line in block.splitlines() if "rlx-train" in line]
    assert commands
    for line in commands:
        overrides = shlex.split(line, comments=True)[1:]
        cfg = compose_config(tmp_path, tmp_path, *overrides, debug=False)
        if cfg.rollout.backend != "vllm":  # vllm needs the package and a GPU to validate
            validate(cfg)

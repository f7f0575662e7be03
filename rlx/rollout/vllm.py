"""Rollouts with a colocated vLLM engine (optional extra `[vllm]`, CUDA GPU only).

The engine lives in the trainer's process next to the policy and generates from the policy's
current weights: before each generation the weights are synced from the policy (full weights
through the model's `load_weights`, or, with LoRA, the adapters saved and hot-swapped as a new
`LoRARequest`, so the base weights are never copied). The sampler's own log-probs are not used
for the loss: the trainer recomputes log-probs (fp32) on the returned tokens, so the ratio is
exact whatever vLLM's kernels do (Theorem 3 of the paper).

Hugging Face `generate` (rlx.rollout.hf) stays the default; `rollout=vllm` selects this one.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any

import torch

from rlx.rollout.batch import RolloutBatch, response_mask_from_tokens
from rlx.rollout.hf import decode_completions, encode_prompts


def check_vllm(accelerator: str = "gpu") -> None:
    """Raise RuntimeError with the fix when vLLM cannot run here (not installed, no CUDA GPU, or a
    CPU trainer). Called before any model is built."""
    if importlib.util.find_spec("vllm") is None:
        raise RuntimeError("rollout=vllm: vLLM is not installed (pip install 'rlx[vllm]' on a Linux machine "
                           "with a CUDA GPU); HF generate needs nothing extra: rollout=hf")
    if not torch.cuda.is_available():
        raise RuntimeError("rollout=vllm: vLLM needs a CUDA GPU and torch.cuda.is_available() is False on this "
                           "machine; use rollout=hf")
    if accelerator == "cpu":
        raise RuntimeError("rollout=vllm: the trainer runs on the CPU (trainer.accelerator=cpu) but vLLM "
                           "generates on the GPU; use trainer=gpu (or ddp / fsdp), or rollout=hf")


class VLLMRollout:
    """A colocated vLLM engine that samples from the policy's current weights.

    rollout config keys: gpu_memory_utilization (the engine's share of GPU memory; the rest is
    the trainer's), dtype (engine weights), enforce_eager, max_model_len, seed.
    """

    def __init__(self, rollout_cfg: Any, model_cfg: Any, base_dir: str | Path):
        check_vllm()
        from vllm import LLM

        self.cfg = rollout_cfg
        self.lora = bool(model_cfg.lora.enabled)
        options = dict(
            model=str(base_dir),
            dtype=rollout_cfg.dtype,
            gpu_memory_utilization=float(rollout_cfg.gpu_memory_utilization),
            enforce_eager=bool(rollout_cfg.enforce_eager),
            seed=int(rollout_cfg.seed),
        )
        if rollout_cfg.max_model_len:
            options["max_model_len"] = int(rollout_cfg.max_model_len)
        if self.lora:
            options.update(enable_lora=True, max_lora_rank=int(model_cfg.lora.r), max_loras=1)
        self.llm = LLM(**options)
        self.syncs = 0
        self._adapter_dir = tempfile.TemporaryDirectory(prefix="rlx-vllm-lora-")

    # ------------------------------------------------------------------ weight sync
    def sync_weights(self, policy) -> Any:
        """Make the engine sample from `policy` as it is now. Returns the LoRARequest to pass to
        generate (LoRA), or None after loading the full weights into the engine's model."""
        self.syncs += 1
        if self.lora:
            from vllm.lora.request import LoRARequest

            path = Path(self._adapter_dir.name) / f"sync{self.syncs}"
            policy.save_pretrained(str(path))  # adapters only
            # a new id makes vLLM load the new adapter instead of reusing its cached one
            return LoRARequest(f"policy{self.syncs}", self.syncs, str(path))
        state = {name: tensor.detach() for name, tensor in policy.state_dict().items()}

        def load(model):
            model.load_weights(weights=state.items())

        if hasattr(self.llm, "apply_model"):
            self.llm.apply_model(load)
        else:  # older engines
            load(self.llm.llm_engine.model_executor.driver_worker.model_runner.model)
        return None

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, policy, tokenizer, prompt_texts: list[str], group_size: int, max_new_tokens: int,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, **_options) -> RolloutBatch:
        """The same RolloutBatch layout as rlx.rollout.hf.generate_rollouts (left-padded prompts,
        completions right-padded after EOS), sampled by vLLM from the synced policy."""
        from vllm import SamplingParams

        lora_request = self.sync_weights(policy)
        input_ids, attention_mask = encode_prompts(tokenizer, prompt_texts)
        prompts = [{"prompt_token_ids": row[mask.bool()].tolist()} for row, mask in zip(input_ids, attention_mask)]
        params = SamplingParams(n=group_size, temperature=temperature, top_k=top_k if top_k > 0 else -1,
                                top_p=top_p, max_tokens=max_new_tokens)
        outputs = self.llm.generate(prompts, params, lora_request=lora_request, use_tqdm=False)
        sequences = [list(sample.token_ids) for out in outputs for sample in out.outputs]
        responses = torch.full((len(sequences), max_new_tokens), tokenizer.pad_token_id, dtype=torch.long)
        for row, ids in enumerate(sequences):
            responses[row, : len(ids)] = torch.tensor(ids[:max_new_tokens], dtype=torch.long)
        width = max((len(ids) for ids in sequences), default=1)
        responses = responses[:, : max(1, min(width, max_new_tokens))]
        response_mask, truncated = response_mask_from_tokens(responses, tokenizer.eos_token_id)
        prompt_ids = input_ids.repeat_interleave(group_size, dim=0)
        prompt_mask = attention_mask.repeat_interleave(group_size, dim=0)
        device = policy.device
        full_ids = torch.cat([prompt_ids, responses], dim=1).to(device)
        full_mask = torch.cat([prompt_mask, response_mask.long()], dim=1).to(device)
        return RolloutBatch(
            input_ids=full_ids,
            attention_mask=full_mask,
            response_mask=response_mask.to(device),
            prompt_length=prompt_ids.shape[1],
            completions=decode_completions(tokenizer, responses, response_mask * (responses != tokenizer.eos_token_id)),
            prompt_index=torch.arange(len(prompt_texts)).repeat_interleave(group_size),
            truncated=truncated,
        )

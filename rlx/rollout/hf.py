"""Rollouts with Hugging Face `generate` (KV cache, plain temperature sampling)."""

from __future__ import annotations

import torch

from rlx.precision import step_logprobs
from rlx.rollout.batch import RolloutBatch, response_mask_from_tokens


def encode_prompts(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """<bos> + prompt tokens, left-padded to the longest prompt: (input_ids, attention_mask).
    No <bos> is added when the tokenizer has none or the text already starts with it (a prompt
    already wrapped in a chat template)."""
    bos, bos_text = tokenizer.bos_token_id, tokenizer.bos_token
    encoded = [([bos] if bos is not None and not (bos_text and text.startswith(bos_text)) else [])
               + tokenizer(text, add_special_tokens=False).input_ids for text in texts]
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


def decode_completions(tokenizer, responses: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """Completion texts without special tokens (EOS and padding removed)."""
    lengths = mask.sum(-1).long().tolist()
    return tokenizer.batch_decode(
        [row[:n].tolist() for row, n in zip(responses, lengths)], skip_special_tokens=True
    )


def sampler_logprobs(step_logits: tuple[torch.Tensor, ...], responses: torch.Tensor, temperature: float,
                     logprob_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[N, T] log-probs of the sampled tokens under each generation step's logits (upcast to fp32
    after the sampler's own rounding; log-softmax in logprob_dtype, rlx.precision.step_logprobs),
    one step at a time so no N x T x V tensor is built."""
    return torch.stack([step_logprobs(logits, responses[:, t], temperature, logprob_dtype)
                        for t, logits in enumerate(step_logits)], dim=1)


@torch.no_grad()
def generate_rollouts(
    model,
    tokenizer,
    prompt_texts: list[str],
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    return_logprobs: bool = False,
    min_new_tokens: int = 0,
    logprob_dtype: torch.dtype = torch.float32,
) -> RolloutBatch:
    """Sample `group_size` completions for each prompt from the policy at `temperature`.

    top_k=0 and top_p=1 sample from the full distribution, so the sampling policy is exactly
    softmax(logits / temperature), the policy whose log-probs the loss uses. With
    return_logprobs, extras["sampler_logprobs"][i, t] = log softmax(logits_t / temperature)[y_t]
    from the sampler's own logits (its precision, KV-cache path), for mismatch diagnostics, with
    the log-softmax in logprob_dtype. The logits are the model's own head's (precision.upcast_head
    needs rlx's sampler). min_new_tokens > 0 forbids EOS before that many tokens (fixed-length completions for the
    scaling benchmark; the sampling policy is then no longer softmax(logits / temperature)).
    """
    input_ids, attention_mask = encode_prompts(tokenizer, prompt_texts)
    input_ids = input_ids.repeat_interleave(group_size, dim=0).to(model.device)
    attention_mask = attention_mask.repeat_interleave(group_size, dim=0).to(model.device)
    was_training = model.training
    model.eval()
    try:
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=True,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens or None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            output_logits=return_logprobs,
            return_dict_in_generate=True,
        )
    except RuntimeError as exc:
        if "probability tensor contains" in str(exc):
            raise FloatingPointError(
                "the policy produced non-finite logits during generation (NaN/inf weights?): " + str(exc)
            ) from exc
        raise
    finally:
        model.train(was_training)
    prompt_length = input_ids.shape[1]
    responses = output.sequences[:, prompt_length:]
    response_mask, truncated = response_mask_from_tokens(responses, tokenizer.eos_token_id)
    full_ids = torch.cat([input_ids, responses], dim=1)
    full_mask = torch.cat([attention_mask, response_mask.long()], dim=1)
    extras = {"sampler_logprobs": sampler_logprobs(output.logits, responses, temperature,
                                                     logprob_dtype)} if return_logprobs else {}
    return RolloutBatch(
        extras=extras,
        input_ids=full_ids,
        attention_mask=full_mask,
        response_mask=response_mask,
        prompt_length=prompt_length,
        completions=decode_completions(tokenizer, responses, response_mask * (responses != tokenizer.eos_token_id)),
        prompt_index=torch.arange(len(prompt_texts)).repeat_interleave(group_size),
        truncated=truncated,
    )

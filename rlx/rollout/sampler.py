"""rlx's own KV-cache sampler: each prompt is prefilled once for its whole group, and finished
sequences leave the batch, so no step computes a row that is already done.

The sampled distribution is exactly Hugging Face generate's with the same settings:
softmax(logits / temperature), optionally restricted by top-k / top-p, EOS forbidden for the
first `min_new_tokens` tokens. Only the work differs: HF generate runs prompts x group_size rows
through the prefill and every row through every step until the longest sequence ends.
"""

from __future__ import annotations

import inspect

import torch

from rlx.precision import fp32_head_logits, step_logprobs
from rlx.rollout.batch import RolloutBatch, response_mask_from_tokens
from rlx.rollout.hf import decode_completions, encode_prompts


def filter_logits(scores: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Scores with everything outside the top-k tokens and outside the smallest set whose
    probability reaches top_p set to -inf (top_k=0 and top_p=1 keep the full distribution)."""
    if top_k and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1, None]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        cumulative = sorted_scores.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_scores.softmax(-1) >= top_p  # the mass before this token already reaches p
        scores = scores.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return scores


def cache_keyword(model) -> str:
    """The forward() argument that takes the KV cache (`cache` in newer transformers releases)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def last_logits(model, upcast_head: bool, **inputs):
    """(logits of each row's last position [N, V], the KV cache) of one forward step: the model's
    own head, or with upcast_head its decoder's hidden state through the LM head in fp32
    (rlx.precision.fp32_head_logits, as the trainer forms them under precision.upcast_head)."""
    if not upcast_head:
        out = model(**inputs, logits_to_keep=1)
        return out.logits[:, -1], out.past_key_values
    decoder = model.get_decoder()
    out = decoder(**inputs)
    return fp32_head_logits(model.get_output_embeddings(), out.last_hidden_state[:, -1]), out.past_key_values


@torch.no_grad()
def sample_rollouts(
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
    upcast_head: bool = False,
) -> RolloutBatch:
    """`group_size` completions per prompt, the same RolloutBatch as `generate_rollouts`.

    The prompts (left-padded) go through the model once; their KV cache is repeated group_size
    times. At each step, rows that sampled EOS are removed from the cache and the batch. With
    return_logprobs, extras["sampler_logprobs"][i, t] = log softmax(logits_t / temperature)[y_t]
    from the sampler's own logits (its precision, KV-cache path), with the log-softmax in
    logprob_dtype (rlx.precision.step_logprobs). upcast_head: the next-token logits come from the LM head in
    fp32 (last_logits), for sampling and log-probs alike, as precision.upcast_head makes the
    trainer form them.
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    prompt_ids, prompt_mask = (x.to(model.device) for x in encode_prompts(tokenizer, prompt_texts))
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    cache_arg = cache_keyword(model)
    was_training = model.training
    model.eval()
    try:
        logits, cache = last_logits(model, upcast_head, input_ids=prompt_ids, attention_mask=prompt_mask,
                                    position_ids=positions, use_cache=True)
        cache.batch_repeat_interleave(group_size)
        logits = logits.repeat_interleave(group_size, dim=0)
        mask = prompt_mask.repeat_interleave(group_size, dim=0)
        next_position = positions[:, -1].repeat_interleave(group_size) + 1
        n = len(prompt_texts) * group_size
        responses = torch.full((n, max_new_tokens), pad, dtype=torch.long, device=model.device)
        # explicit fp32: Lightning's bf16-true plugin makes bf16 the default dtype during a run
        logprobs = torch.zeros(n, max_new_tokens, dtype=torch.float32, device=model.device) if return_logprobs else None
        alive = torch.arange(n, device=model.device)
        steps = 0
        for t in range(max_new_tokens):
            scores = logits.float() / temperature
            sample_scores = scores.clone() if t < min_new_tokens else scores
            if t < min_new_tokens:
                sample_scores[:, eos] = float("-inf")
            probs = filter_logits(sample_scores, top_k, top_p).softmax(-1)
            if not torch.isfinite(probs).all():
                raise FloatingPointError("the policy produced non-finite logits during generation (NaN/inf weights?)")
            token = torch.multinomial(probs, 1).squeeze(-1)
            responses[alive, t] = token
            if return_logprobs:
                logprobs[alive, t] = step_logprobs(logits, token, temperature, logprob_dtype)
            steps = t + 1
            running = token != eos
            if t == max_new_tokens - 1 or not running.any():
                break
            if not running.all():  # finished rows leave the cache and the batch
                keep = running.nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                alive, token, mask, next_position = alive[keep], token[keep], mask[keep], next_position[keep]
            mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
            logits, cache = last_logits(model, upcast_head, input_ids=token[:, None], attention_mask=mask,
                                        position_ids=next_position[:, None], use_cache=True, **{cache_arg: cache})
            next_position = next_position + 1
    finally:
        model.train(was_training)
    responses = responses[:, :steps]
    response_mask, truncated = response_mask_from_tokens(responses, eos)
    input_ids = prompt_ids.repeat_interleave(group_size, dim=0)
    attention_mask = prompt_mask.repeat_interleave(group_size, dim=0)
    return RolloutBatch(
        extras={"sampler_logprobs": logprobs[:, :steps]} if return_logprobs else {},
        input_ids=torch.cat([input_ids, responses], dim=1),
        attention_mask=torch.cat([attention_mask, response_mask.long()], dim=1),
        response_mask=response_mask,
        prompt_length=prompt_ids.shape[1],
        completions=decode_completions(tokenizer, responses, response_mask * (responses != eos)),
        prompt_index=torch.arange(len(prompt_texts)).repeat_interleave(group_size),
        truncated=truncated,
    )

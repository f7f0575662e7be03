"""The token-statistics forward: log pi(y_t | x, y_<t) and H(pi(. | x, y_<t)) of completion tokens.

Used by the update (with gradients), the rollout-policy statistics, the reference policy and
evaluation (without). Only the T positions that predict completion tokens reach the LM head,
logits are divided by the sampling temperature, and the entropy is always exact fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from rlx import objectives as obj
from rlx.precision import dtype_of, fp32_head_logits, logprobs_in_dtype
from rlx.rollout import RolloutBatch
from rlx.rollout.batch import length_sorted_micro_batches
from rlx.rollout.sampler import cache_keyword


@dataclass
class TokenStats:
    """Per-token fp32 log-probs of the sampled tokens and (optionally) full-distribution entropy."""

    logprobs: torch.Tensor
    entropy: torch.Tensor | None


@dataclass(frozen=True)
class ForwardSettings:
    """How a forward pass over a rollout batch is formed and cut into micro-batches."""

    temperature: float = 1.0
    chunk_size: int = 1024               # rows of logits upcast to fp32 at once
    logprob_dtype: torch.dtype = torch.float32
    upcast_head: bool = False            # LM head in fp32 from the hidden states
    share_prompts: bool = False          # each prompt computed once per group
    micro_batch_size: int = 256          # rows per micro-batch
    micro_batch_tokens: int | None = None  # padded tokens per micro-batch

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "ForwardSettings":
        """The settings of a run: rollout.temperature, monitor.chunk_size, precision.logprob_dtype /
        upcast_head and trainer.share_prompt_prefix / micro_batch_size / micro_batch_tokens."""
        return cls(temperature=float(cfg.rollout.temperature), chunk_size=int(cfg.monitor.chunk_size),
                   logprob_dtype=dtype_of(cfg.precision.logprob_dtype, "precision.logprob_dtype"),
                   upcast_head=bool(cfg.precision.upcast_head),
                   share_prompts=bool(cfg.trainer.share_prompt_prefix),
                   micro_batch_size=int(cfg.trainer.micro_batch_size),
                   micro_batch_tokens=cfg.trainer.micro_batch_tokens)

    def in_fp32(self) -> "ForwardSettings":
        """The same settings with fp32 log-probs from the model's own head (the fp32 recomputation
        of the precision diagnostics, on an fp32 copy of the weights)."""
        return ForwardSettings(self.temperature, self.chunk_size, torch.float32, False, self.share_prompts,
                               self.micro_batch_size, self.micro_batch_tokens)


def shared_prompt_rows(batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(one row per distinct prompt, each row's index into those) when every row of a prompt
    group carries identical prompt tokens; None otherwise (nothing to share)."""
    prompt_ids = batch.input_ids[:, :batch.prompt_length]
    unique, inverse = torch.unique(batch.prompt_index, return_inverse=True)
    if len(unique) == len(inverse):
        return None
    first = torch.empty(len(unique), dtype=torch.long).scatter_(0, inverse, torch.arange(len(inverse)))  # any row of each
    if not torch.equal(prompt_ids[first][inverse], prompt_ids):
        return None
    return first, inverse


def completion_outputs(net, batch: RolloutBatch, share_prompts: bool, output: str, **extra) -> torch.Tensor:
    """net's `output` ("logits" of the model, or "last_hidden_state" of its decoder) at the T
    positions that predict the T completion tokens: [B, T, ...].

    share_prompts: the prompt goes through the network once per distinct prompt (not once per
    sample: a group of G samples shares it); its KV cache is gathered to every row of the group,
    then the completions run on top of it. Gradients flow through the gathered cache into the
    prompt's activations, so values and gradients equal those of the full forward pass.
    """
    length = batch.responses.shape[1]
    positions = batch.position_ids
    shared = shared_prompt_rows(batch) if share_prompts else None
    if shared is None:
        keep = {"logits_to_keep": length + 1} if output == "logits" else {}
        out = net(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=positions,
                  use_cache=False, **keep, **extra)
        return getattr(out, output)[:, -(length + 1):-1]
    first, inverse = shared
    p = batch.prompt_length
    prefix = net(input_ids=batch.input_ids[first, :p], attention_mask=batch.attention_mask[first, :p],
                 position_ids=positions[first, :p], use_cache=True,
                 **({"logits_to_keep": 1} if output == "logits" else {}), **extra)
    head = getattr(prefix, output)[:, -1][inverse, None]  # predicts the first completion token
    if length == 1:
        return head
    cache = prefix.past_key_values
    cache.batch_select_indices(inverse)  # a differentiable gather: row i gets its prompt's keys/values
    end = p + length - 1  # the last completion token predicts nothing
    rest = net(input_ids=batch.input_ids[:, p:end], attention_mask=batch.attention_mask[:, :end],
               position_ids=positions[:, p:end], use_cache=True, **{cache_keyword(net): cache}, **extra)
    return torch.cat([head, getattr(rest, output)], dim=1)


def activation_checkpointing(model) -> bool:
    """Whether the model recomputes activations in backward (HF renamed the attribute in 5.x)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name) or hasattr(model, name):
            return bool(getattr(model, name))
    return False


def completion_logits(model, batch: RolloutBatch, settings: ForwardSettings) -> torch.Tensor:
    """[B, T, V] logits / temperature at the completion positions (LM head in fp32 if upcast_head)."""
    share = settings.share_prompts and not activation_checkpointing(model)  # HF drops the KV cache under checkpointing
    if settings.upcast_head:
        hidden = completion_outputs(model.get_decoder(), batch, share, "last_hidden_state")
        logits = fp32_head_logits(model.get_output_embeddings(), hidden)
    else:
        logits = completion_outputs(model, batch, share, "logits")
    return logits / settings.temperature if settings.temperature != 1.0 else logits


def response_token_stats(model, batch: RolloutBatch, settings: ForwardSettings, with_entropy: bool) -> TokenStats:
    """log pi(y_t | x, y_<t) of the completion tokens (and H(pi(.|x, y_<t)) if asked).

    Log-probs are formed in settings.logprob_dtype (fp32 by default; bf16 keeps Theorem 3's
    rounding on purpose); the entropy is exact fp32 whatever the model's dtype."""
    responses = batch.responses
    logits = completion_logits(model, batch, settings)
    chunk = settings.chunk_size
    if settings.logprob_dtype != torch.float32:
        logprobs = logprobs_in_dtype(logits, responses, settings.logprob_dtype)
        return TokenStats(logprobs, obj.entropy_from_logits(logits, chunk_size=chunk) if with_entropy else None)
    if with_entropy:
        return TokenStats(*obj.logprobs_and_entropy(logits, responses, chunk_size=chunk))
    return TokenStats(obj.logprobs_from_logits(logits, responses, chunk_size=chunk), None)


def micro_batches(rollout: RolloutBatch, rows: torch.Tensor, settings: ForwardSettings) -> list[tuple[torch.Tensor, int]]:
    """(rows, completion width) of each micro-batch: rows sorted by length and cut by
    settings.micro_batch_size rows and settings.micro_batch_tokens padded tokens."""
    lengths = rollout.response_lengths().cpu()
    batches = length_sorted_micro_batches(rows, lengths, settings.micro_batch_size, settings.micro_batch_tokens,
                                          rollout.prompt_length)
    return [(micro, max(1, int(lengths[micro].max()))) for micro in batches]


def batched_token_stats(model, rollout: RolloutBatch, settings: ForwardSettings, with_entropy: bool) -> TokenStats:
    """response_token_stats over length-sorted micro-batches, each trimmed to its longest
    completion; [N, T] results (0 beyond a row's micro-batch width: always outside the mask)."""
    n, length = rollout.response_mask.shape
    logprobs = entropy = None
    for micro, width in micro_batches(rollout, torch.arange(n), settings):
        part = response_token_stats(model, rollout.select(micro, width), settings, with_entropy)
        if logprobs is None:
            logprobs = part.logprobs.new_zeros(n, length)
            entropy = part.entropy.new_zeros(n, length) if with_entropy else None
        logprobs[micro, :width] = part.logprobs
        if with_entropy:
            entropy[micro, :width] = part.entropy
    return TokenStats(logprobs, entropy)

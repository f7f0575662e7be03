"""The rollout batch: what generation hands to scoring and to the loss."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RolloutBatch:
    """N = prompts x group_size sequences, groups contiguous (rows g*G .. g*G+G-1 share a prompt).

    input_ids: [N, P + T] left-padded prompt followed by the completion (pad after EOS).
    attention_mask: [N, P + T] 1 on prompt tokens and on completion tokens up to and including EOS.
    response_mask: [N, T] float, 1 on the completion tokens the policy is trained on.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prompt_length: int
    completions: list[str]
    prompt_index: torch.Tensor
    truncated: torch.Tensor
    extras: dict = field(default_factory=dict)

    @property
    def responses(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_length :]

    @property
    def position_ids(self) -> torch.Tensor:
        """Positions that skip left padding, the same that `generate` used."""
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def response_lengths(self) -> torch.Tensor:
        """[N] completion positions up to the last real token (EOS included; in a multi-turn
        episode the environment's tokens too): the columns a forward pass of the row needs."""
        real = self.attention_mask[:, self.prompt_length :].long()
        positions = torch.arange(1, real.shape[1] + 1, device=real.device)
        return (real * positions).amax(-1) if real.shape[1] else real.sum(-1)

    def select(self, rows: torch.Tensor, width: int | None = None) -> "RolloutBatch":
        """The sub-batch of the given rows (for minibatches and micro-batches); with `width`,
        only the first `width` completion columns (dropping trailing padding changes no log-prob:
        attention is causal)."""
        end = self.input_ids.shape[1] if width is None else self.prompt_length + width
        return RolloutBatch(
            input_ids=self.input_ids[rows, :end],
            attention_mask=self.attention_mask[rows, :end],
            response_mask=self.response_mask[rows, : end - self.prompt_length],
            prompt_length=self.prompt_length,
            completions=[self.completions[i] for i in rows.tolist()],
            prompt_index=self.prompt_index[rows],
            truncated=self.truncated[rows],
        )


def response_mask_from_tokens(responses: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of completion tokens up to and including the first EOS; and whether no EOS came
    (the completion hit max_new_tokens and is truncated).

    mask[i, t] = 1 if no EOS occurs in responses[i, :t], else 0.
    """
    is_eos = responses == eos_token_id
    eos_before = torch.cumsum(is_eos.long(), dim=-1) - is_eos.long()
    mask = (eos_before == 0).float()
    truncated = ~is_eos.any(dim=-1)
    return mask, truncated


def length_sorted_micro_batches(rows: torch.Tensor, lengths: torch.Tensor, max_rows: int,
                                max_tokens: int | None, prompt_length: int) -> list[torch.Tensor]:
    """`rows` ordered by completion length (longest first) and cut into micro-batches of at most
    `max_rows` rows whose padded size rows x (prompt_length + longest completion in it) stays
    within `max_tokens` (None: no token budget; a micro-batch always holds at least one row).

    Rows of similar length share a micro-batch, so each forward pass can be trimmed to its own
    longest completion instead of the whole batch's (padding is most of a batch whose lengths vary).
    """
    if len(rows) == 0:
        return []
    order = rows[torch.argsort(lengths[rows], descending=True, stable=True)]
    batches, start = [], 0
    while start < len(order):
        width = prompt_length + int(lengths[order[start]])  # the longest row comes first
        fit = max_rows if max_tokens is None else max(1, min(max_rows, max_tokens // max(width, 1)))
        batches.append(order[start : start + fit])
        start += fit
    return batches

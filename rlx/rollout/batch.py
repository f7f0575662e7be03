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

    def select(self, rows: torch.Tensor) -> "RolloutBatch":
        """The sub-batch of the given rows (for minibatches and micro-batches)."""
        return RolloutBatch(
            input_ids=self.input_ids[rows],
            attention_mask=self.attention_mask[rows],
            response_mask=self.response_mask[rows],
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

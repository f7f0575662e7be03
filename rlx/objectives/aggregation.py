"""Reduce a per-token loss matrix [B, T] to a scalar (verl's loss_agg_mode names).

Every mode is a sum of per-token or per-sequence terms divided by a constant. Pass the
constant for the WHOLE batch (`global_tokens`, `global_seqs`) and the loss and its gradient
no longer depend on how the batch is split into micro-batches or ranks: summing the
micro-batch losses gives exactly the full-batch loss.
"""

from __future__ import annotations

import torch

from ._checks import as_bool_mask, check_same_shape, safe_denominator

LOSS_AGG_MODES = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)


def count_tokens(mask: torch.Tensor) -> torch.Tensor:
    """Number of valid tokens (the `global_tokens` normaliser when summed over micro-batches)."""
    return as_bool_mask(mask).sum()


def count_seqs(mask: torch.Tensor) -> torch.Tensor:
    """Number of sequences with at least one valid token (the `global_seqs` normaliser)."""
    return as_bool_mask(mask).any(dim=-1).sum()


def aggregate_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    global_tokens: float | torch.Tensor | None = None,
    global_seqs: float | torch.Tensor | None = None,
    max_response_length: int | None = None,
) -> torch.Tensor:
    """Aggregate loss_mat[B, T] over valid tokens (mask[B, T]) to a 0-d tensor.

    With m the mask, N = global_tokens (default sum m), S = global_seqs (default: rows of this
    batch with at least one valid token), |y_i| = sum_t m_it:
      token-mean              : sum_it m l / N
      seq-mean-token-mean     : sum_i (sum_t m l / |y_i|) / S          (GRPO)
      seq-mean-token-sum      : sum_i (sum_t m l) / S
      seq-mean-token-sum-norm : sum_i (sum_t m l) / (S * max_response_length)   (Dr.GRPO)
    max_response_length defaults to T; pass it explicitly when micro-batches are padded to
    different lengths. seq-mean-token-sum-norm divides by S as Dr.GRPO's paper and TRL's
    dr_grpo do; verl's mode of that name divides by max_response_length only (S times larger).
    Fully masked rows contribute 0; an empty batch gives 0 (not NaN).
    Masked entries of loss_mat may hold anything (inf, NaN): they are excluded with `where`.
    """
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"loss_agg_mode={mode!r} is invalid; allowed: {list(LOSS_AGG_MODES)}")
    check_same_shape(loss_mat=loss_mat, mask=mask)
    if loss_mat.dim() != 2:
        raise ValueError(f"loss_mat must be [B, T], got shape {tuple(loss_mat.shape)}")
    valid = as_bool_mask(mask)
    lm = torch.where(valid, loss_mat, torch.zeros_like(loss_mat))
    if mode == "token-mean":
        n = count_tokens(valid) if global_tokens is None else global_tokens
        return lm.sum() / safe_denominator(n, lm)
    s = count_seqs(valid) if global_seqs is None else global_seqs
    seq_sum = lm.sum(dim=-1)
    if mode == "seq-mean-token-mean":
        seq_len = valid.sum(dim=-1).to(lm.dtype)
        per_seq = seq_sum / torch.where(seq_len > 0, seq_len, torch.ones_like(seq_len))
        return per_seq.sum() / safe_denominator(s, lm)
    if mode == "seq-mean-token-sum":
        return seq_sum.sum() / safe_denominator(s, lm)
    norm = loss_mat.shape[-1] if max_response_length is None else max_response_length
    if norm <= 0:
        raise ValueError(f"max_response_length={max_response_length!r} is invalid; must be > 0")
    return seq_sum.sum() / (safe_denominator(s, lm) * norm)

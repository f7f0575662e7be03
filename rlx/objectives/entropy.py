"""Exact token entropy and sampled-token log-probs from logits, in fp32, chunked.

Only `chunk_size x V` values are ever upcast to fp32 at once, in the forward AND the backward
pass: a custom autograd function keeps the original logits (in their own dtype) and recomputes
the chunk's fp32 softmax in backward instead of storing B x T x V fp32 activations.
(Theorem 3 of the paper: log-probs and ratios must be computed in fp32.) Outputs are fp32 for
bf16 / fp16 / fp32 logits and fp64 for fp64 logits.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


def _wide(dtype: torch.dtype) -> torch.dtype:
    """The compute / output dtype: fp32, or fp64 for fp64 logits."""
    return torch.promote_types(dtype, torch.float32)


def _chunk_logsoftmax(x: torch.Tensor):
    """fp32 (fp64 for fp64 input) log-softmax of a chunk of logits."""
    return torch.log_softmax(x.to(_wide(x.dtype)), dim=-1)


def _p_and_safe_logp(logp: torch.Tensor):
    """(p, logp) with logp's -inf entries (p = 0) replaced in place by the dtype's lowest finite
    value, so p * logp is 0 there instead of NaN (0 log 0 = 0)."""
    p = logp.exp()
    logp.clamp_(min=torch.finfo(logp.dtype).min)
    return p, logp


class _ChunkedLogprobEntropy(torch.autograd.Function):
    """(logits[N, V], labels[N] | None) -> (logprob[N], entropy[N]) in fp32 (fp64 for fp64).

    At most three chunk x V temporaries live at once (the upcast copy, log p, p); the backward
    pass recomputes them per chunk and works in place.
    """

    @staticmethod
    def forward(ctx, logits, labels, chunk_size, want_lp, want_h):
        n = logits.shape[0]
        lp = logits.new_zeros(n if want_lp else 0, dtype=_wide(logits.dtype))
        ent = logits.new_zeros(n if want_h else 0, dtype=_wide(logits.dtype))
        for s in range(0, n, chunk_size):
            e = min(s + chunk_size, n)
            logp = _chunk_logsoftmax(logits[s:e])
            if want_lp:
                lp[s:e] = logp.gather(-1, labels[s:e, None]).squeeze(-1)
            if want_h:
                p, logp = _p_and_safe_logp(logp)
                ent[s:e] = -p.mul_(logp).sum(-1)  # H = -sum p log p
                del p
            del logp
        ctx.chunk_size, ctx.want_lp, ctx.want_h = chunk_size, want_lp, want_h
        ctx.save_for_backward(logits, labels if want_lp else None, ent if want_h else None)
        if not want_lp:
            ctx.mark_non_differentiable(lp)
        if not want_h:
            ctx.mark_non_differentiable(ent)
        return lp, ent

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_lp, grad_h):
        logits, labels, ent = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        use_lp = ctx.want_lp and grad_lp is not None
        use_h = ctx.want_h and grad_h is not None
        n = logits.shape[0]
        grad = torch.empty_like(logits)
        for s in range(0, n, ctx.chunk_size):
            e = min(s + ctx.chunk_size, n)
            if not (use_lp or use_h):
                grad[s:e] = 0
                continue
            p, logp = _p_and_safe_logp(_chunk_logsoftmax(logits[s:e]))
            g = None
            if use_h:
                # dH/dz = -p (log p + H): build -g_h * p * (log p + H) in logp's buffer
                g = logp.add_(ent[s:e, None]).mul_(p).mul_(-grad_h[s:e, None].to(p.dtype))
                if use_lp:  # d lp_y / dz = onehot(y) - p
                    g.addcmul_(p, grad_lp[s:e, None].to(p.dtype), value=-1.0)
            else:
                logp = None  # free it before the next chunk allocates
                g = p.mul_(-grad_lp[s:e, None].to(p.dtype))
            if use_lp:
                g.scatter_add_(-1, labels[s:e, None], grad_lp[s:e, None].to(g.dtype))
            grad[s:e] = g
            p = logp = g = None  # g may alias logp or p: drop every name before the next chunk
        return grad, None, None, None, None


def _run(logits, labels, chunk_size, want_lp, want_h):
    if chunk_size is None or int(chunk_size) < 1:
        raise ValueError(f"chunk_size={chunk_size!r} is invalid; must be an int >= 1")
    if logits.dim() < 1:
        raise ValueError("logits must have a vocabulary axis (shape [..., V])")
    lead, v = logits.shape[:-1], logits.shape[-1]
    flat = logits.reshape(-1, v)
    flat_labels = None
    if want_lp:
        if tuple(labels.shape) != tuple(lead):
            raise ValueError(
                f"labels shape {tuple(labels.shape)} must equal logits.shape[:-1]={tuple(lead)}"
            )
        flat_labels = labels.reshape(-1).long()
    lp, ent = _ChunkedLogprobEntropy.apply(flat, flat_labels, int(chunk_size), want_lp, want_h)
    return lp.reshape(lead) if want_lp else None, ent.reshape(lead) if want_h else None


def entropy_from_logits(logits: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """Exact entropy of softmax(logits) over the last axis, fp32:
    H = -sum_v p_v log p_v,  p = softmax(logits.float()).
    Chunked over the flattened leading (position) axis; differentiable (dH/dz = -p (log p + H)).
    """
    return _run(logits, None, chunk_size, False, True)[1]


def logprobs_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, chunk_size: int = 1024
) -> torch.Tensor:
    """log softmax(logits.float())[labels] over the last axis, fp32, chunked; differentiable.
    labels[...] must equal logits.shape[:-1] and hold valid token ids (no -100: mask instead).
    """
    return _run(logits, labels, chunk_size, True, False)[0]


def logprobs_and_entropy(
    logits: torch.Tensor, labels: torch.Tensor, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logprobs_from_logits, entropy_from_logits) in one fp32 pass over each chunk."""
    return _run(logits, labels, chunk_size, True, True)

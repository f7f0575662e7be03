"""Small shared helpers: shape checks and masked reductions (no public API)."""

from __future__ import annotations

import torch


def check_same_shape(**tensors: torch.Tensor) -> None:
    """Raise ValueError unless every named tensor has the same shape."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{n}={s}" for n, s in shapes.items())
        raise ValueError(f"shape mismatch: {desc}; all must be equal")


def as_bool_mask(mask: torch.Tensor) -> torch.Tensor:
    """A 0/1 (or bool) mask as bool."""
    return mask if mask.dtype == torch.bool else mask != 0


def safe_denominator(d: torch.Tensor | float | int, like: torch.Tensor) -> torch.Tensor:
    """`d` as a tensor on like's device/dtype, with 0 replaced by 1 (an empty batch gives loss 0, not NaN)."""
    d = torch.as_tensor(d, dtype=like.dtype, device=like.device)
    return torch.where(d > 0, d, torch.ones_like(d))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(x * mask) / sum(mask); 0 when the mask is empty. `mask` may be bool or float weights."""
    w = mask.to(x.dtype)
    x = torch.where(w != 0, x, torch.zeros_like(x))
    return (x * w).sum() / safe_denominator(w.sum(), x)

"""Outcome-reward advantage estimators for grouped samples (docs/method.md, "Advantages").

Rewards come as a flat tensor [B] with B = n_groups * group_size; the samples of one prompt are
contiguous: group g is rows [g*G : (g+1)*G]. Every estimator returns [B] (one scalar per
sequence); broadcast it over the sequence's tokens with `adv[:, None]`.
"""

from __future__ import annotations

from typing import Callable

import torch

GRPO_SCALES = ("group", "batch", "none")


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Rewards [B] as float [n_groups, G], validating shape and group size."""
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"group_size={group_size!r} is invalid; must be an int >= 1")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    if rewards.numel() % group_size != 0:
        raise ValueError(
            f"rewards has {rewards.numel()} entries, not a multiple of group_size={group_size}"
        )
    dtype = torch.promote_types(rewards.dtype, torch.float32)
    return rewards.to(dtype).reshape(-1, group_size)


def _std(x: torch.Tensor, dim=None, keepdim: bool = False) -> torch.Tensor:
    """Unbiased (Bessel) std as in verl and TRL; 0 where there is a single element."""
    n = x.numel() if dim is None else x.shape[dim]
    if n < 2:
        return torch.zeros_like(x.mean(dim=dim, keepdim=keepdim) if dim is not None else x.mean())
    return x.std(dim=dim, keepdim=keepdim) if dim is not None else x.std()


def grpo_advantages(
    rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-6
) -> torch.Tensor:
    """GRPO advantage: A_i = (R_i - mean_g R) / (std + eps).

    scale="group": std over the sample's group (GRPO); "batch": std over the whole batch
    (mean still per group, as TRL's scale_rewards="batch"); "none": no division (Dr.GRPO).
    std is the unbiased sample std (verl / TRL convention). A group of one has A = 0 (the sample
    is its own baseline); all-equal rewards give A = 0.
    """
    if scale not in GRPO_SCALES:
        raise ValueError(f"scale={scale!r} is invalid; allowed: {list(GRPO_SCALES)}")
    if eps < 0:
        raise ValueError(f"eps={eps!r} is invalid; must be >= 0")
    r = _grouped(rewards, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    if scale != "none":
        std = _std(r, dim=1, keepdim=True) if scale == "group" else _std(r)
        d = std + eps
        # with eps = 0 an all-equal group would be 0 / 0: its centred rewards are 0, keep them 0
        centred = centred / torch.where(d > 0, d, torch.ones_like(d))
    return centred.reshape(-1)


def dr_grpo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Dr.GRPO advantage (Liu et al. 2025): A_i = R_i - mean_g R, no std normalisation.

    Pair it with loss_agg_mode="seq-mean-token-sum-norm" (constant length normaliser).
    """
    return grpo_advantages(rewards, group_size, scale="none")


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO leave-one-out advantage: A_i = R_i - mean_{j != i} R_j = G/(G-1) * (R_i - mean_g R).

    Needs group_size >= 2 (a group of one has no leave-one-out baseline): ValueError otherwise.
    """
    if isinstance(group_size, int) and group_size == 1:
        raise ValueError(
            "group_size=1 is invalid for a leave-one-out advantage; must be >= 2 "
            "(use grpo/dr_grpo, or sample several completions per prompt)"
        )
    r = _grouped(rewards, group_size)
    loo_mean = (r.sum(dim=1, keepdim=True) - r) / (group_size - 1)
    return (r - loo_mean).reshape(-1)


def loop_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """LOOP advantage (Chen et al. 2025): the leave-one-out baseline without std normalisation,
    A_i = R_i - mean_{j != i} R_j, i.e. the RLOO estimator. LOOP differs from RLOO in its loss
    (`loop`: per-token log-symmetric clip, several epochs), not in its advantage.
    """
    return rloo_advantages(rewards, group_size)


def dynamic_sampling_mask(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """DAPO dynamic sampling: bool[B], True for the rows of groups whose rewards are NOT all equal.

    Groups with identical rewards have zero group-relative advantage and only dilute the batch;
    `(~mask).sum() // group_size` is the number of groups dropped (log it).
    """
    r = _grouped(rewards, group_size)
    keep = (r != r[:, :1]).any(dim=1, keepdim=True)
    return keep.expand_as(r).reshape(-1)


ADVANTAGE_ESTIMATORS: dict[str, Callable[..., torch.Tensor]] = {
    "grpo": grpo_advantages,
    "rloo": rloo_advantages,
    "loop": loop_advantages,
    "dr_grpo": dr_grpo_advantages,
}


def advantage_keys(name: str) -> tuple[str, ...]:
    """The keyword arguments compute_advantages(name, ...) accepts (grpo: scale, eps; the
    others: none), so a trainer holding one generic config can filter it."""
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(
            f"advantage estimator {name!r} is unknown; allowed: {sorted(ADVANTAGE_ESTIMATORS)}"
        )
    from ._registry import accepted_kwargs

    return tuple(accepted_kwargs(ADVANTAGE_ESTIMATORS[name], skip=2))


def compute_advantages(name: str, rewards: torch.Tensor, group_size: int, **kw) -> torch.Tensor:
    """Look up `name` in ADVANTAGE_ESTIMATORS and call it: fn(rewards, group_size, **kw) -> [B]."""
    try:
        fn = ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"advantage estimator {name!r} is unknown; allowed: {sorted(ADVANTAGE_ESTIMATORS)}"
        ) from None
    from ._registry import check_kwargs

    check_kwargs(fn, kw, what=f"advantage estimator {name!r}", skip=2)
    return fn(rewards, group_size, **kw)

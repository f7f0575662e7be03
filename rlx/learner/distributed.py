"""Reductions across data-parallel ranks (torch.distributed); plain values in one process.

Rows of the world's rollout batch are numbered globally: rank r owns rows [r n, (r + 1) n), so
minibatches (and their shuffling) are the same whatever the number of ranks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(world size, rank) of torch.distributed; (1, 0) in a single process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def all_reduce(tensor: torch.Tensor, op=None) -> torch.Tensor:
    """In-place all_reduce (sum by default) across ranks; the tensor itself in one process."""
    if world()[0] > 1:
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """In-place max over ranks."""
    return all_reduce(tensor, op=dist.ReduceOp.MAX if world()[0] > 1 else None)


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    """In-place min over ranks."""
    return all_reduce(tensor, op=dist.ReduceOp.MIN if world()[0] > 1 else None)


def global_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """sum(values * mask) / sum(mask) over the response tokens of every rank's shard."""
    totals = all_reduce(torch.stack([(values * mask).sum(), mask.sum()]).double())
    return float(totals[0] / totals[1].clamp(min=1))


def sum_over_ranks(values: dict[str, float], device) -> dict[str, float]:
    """Each value summed over ranks (unchanged in one process)."""
    if world()[0] == 1 or not values:
        return values
    keys = sorted(values)
    summed = all_reduce(torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device))
    return dict(zip(keys, summed.tolist()))


def mean_over_ranks(metrics: dict[str, float], device) -> dict[str, float]:
    """The mean of each metric over ranks (metrics that are already global are unchanged)."""
    size = world()[0]
    if size == 1 or not metrics:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([float("nan") if metrics[k] is None else float(metrics[k]) for k in keys],
                          dtype=torch.float64, device=device)
    all_reduce(values)
    return dict(zip(keys, (values / size).tolist()))


def local_rows(global_rows: torch.Tensor, n_local: int) -> torch.Tensor:
    """The rows of `global_rows` this rank owns, as local indices."""
    _, rank = world()
    owned = (global_rows >= rank * n_local) & (global_rows < (rank + 1) * n_local)
    return global_rows[owned] - rank * n_local


def leave_together() -> None:
    """Barrier, then destroy the process group, so every rank leaves the run at the same time:
    a rank that exits while another still holds the group (rank 0 exporting the policy) can
    abort in the collective backend's threads ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

"""Generation backends behind one interface: `generate_rollouts` (rlx's KV-cache sampler by default, HF generate as `rollout.sampler=generate`)."""

from rlx.rollout.batch import RolloutBatch, response_mask_from_tokens
from rlx.rollout.hf import encode_prompts, generate_rollouts
from rlx.rollout.sampler import sample_rollouts

SAMPLERS = {"rlx": sample_rollouts, "generate": generate_rollouts}


def sampler_fn(name: str):
    """The single-turn sampling function named by rollout.sampler."""
    if name not in SAMPLERS:
        raise ValueError(f"rollout.sampler={name!r}: allowed {sorted(SAMPLERS)}")
    return SAMPLERS[name]


__all__ = ["RolloutBatch", "SAMPLERS", "encode_prompts", "generate_rollouts", "response_mask_from_tokens",
           "sample_rollouts", "sampler_fn"]

"""Generation backends behind one interface: `generate_rollouts` (HF generate is the default)."""

from rlx.rollout.batch import RolloutBatch, response_mask_from_tokens
from rlx.rollout.hf import encode_prompts, generate_rollouts

__all__ = ["RolloutBatch", "encode_prompts", "generate_rollouts", "response_mask_from_tokens"]

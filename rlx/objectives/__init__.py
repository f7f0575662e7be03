"""rlx.objectives: pure-torch advantages, policy losses, aggregation, KL estimators, REPO
transforms, fp32 chunked entropy / log-probs and the Theorem 1 prediction.

No Lightning, no Hydra: import it into any trainer. Formulas are in each function's docstring
and, all together with where the trainer calls them, in docs/method.md.
"""

from .advantages import (
    ADVANTAGE_ESTIMATORS,
    advantage_keys,
    compute_advantages,
    dr_grpo_advantages,
    dynamic_sampling_mask,
    grpo_advantages,
    loop_advantages,
    rloo_advantages,
)
from .aggregation import LOSS_AGG_MODES, aggregate_loss, count_seqs, count_tokens
from .entropy import entropy_from_logits, logprobs_and_entropy, logprobs_from_logits
from .kl import KL_TYPES, kl_penalty
from .full_loss import entropy_bonus, kl_loss, policy_loss, policy_loss_keys
from .losses import (
    POLICY_LOSSES,
    cispo_loss,
    clip_cov_loss,
    gspo_loss,
    kl_cov_loss,
    loop_loss,
    ppo_loss,
    reinforce_loss,
)
from .repo import decorrelating_beta, predicted_entropy_change, repo_d, repo_r
from .rollout_correction import ROLLOUT_IS_LEVELS, ROLLOUT_RS_LEVELS, rollout_is_weights, rollout_rs_mask

__all__ = [
    "ADVANTAGE_ESTIMATORS", "KL_TYPES", "LOSS_AGG_MODES", "POLICY_LOSSES", "ROLLOUT_IS_LEVELS", "ROLLOUT_RS_LEVELS",
    "cispo_loss", "clip_cov_loss", "entropy_bonus", "gspo_loss", "kl_cov_loss", "kl_loss", "loop_loss",
    "advantage_keys", "aggregate_loss", "compute_advantages", "count_seqs", "count_tokens",
    "decorrelating_beta", "dr_grpo_advantages", "dynamic_sampling_mask",
    "entropy_from_logits", "grpo_advantages", "kl_penalty", "logprobs_and_entropy",
    "logprobs_from_logits", "loop_advantages", "policy_loss", "policy_loss_keys", "ppo_loss",
    "predicted_entropy_change", "reinforce_loss", "repo_d", "repo_r", "rloo_advantages",
    "rollout_is_weights", "rollout_rs_mask",
]

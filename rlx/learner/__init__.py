"""The learner core: the stages of an RL iteration, without Lightning (see learner.py)."""

from rlx.learner.learner import Learner, reference_policy
from rlx.learner.token_stats import ForwardSettings, TokenStats, batched_token_stats, response_token_stats
from rlx.learner.update import PolicyUpdate, StepHooks

__all__ = ["ForwardSettings", "Learner", "PolicyUpdate", "StepHooks", "TokenStats", "batched_token_stats",
           "reference_policy", "response_token_stats"]

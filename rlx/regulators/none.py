"""No regulator: the base objective as it is (GRPO, DAPO, RLOO, ...)."""

from rlx.regulators.base import Regulator


class NoRegulator(Regulator):
    """Every hook is the identity."""

"""Entropy bonus: loss -= algorithm.entropy_coeff x agg(H_t) (docs/method.md, "Entropy bonus").

The bonus itself is the policy loss's entropy_coeff term (rlx.objectives.entropy_bonus), so this
regulator only names the choice; its coefficient is the verl key algorithm.entropy_coeff.
"""

from rlx.regulators.base import Regulator


class EntropyBonus(Regulator):
    """A fixed entropy bonus, applied by the loss through algorithm.entropy_coeff."""

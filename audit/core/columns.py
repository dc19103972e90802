"""What a results column is: its name, meaning, range, which way is worse, and its group.

Every producer declares the columns it writes with this type (a generator's plugin, an attack
family's stage, the report's own stages); audit/engine/columns.py gathers them into the one
column dictionary that docs/columns.md is generated from.
"""

from __future__ import annotations

from dataclasses import dataclass

MORE_LEAKAGE = "higher = more leakage"
LESS_LEAKAGE = "higher = less leakage"  # p-values: small is evidence of memorisation
MORE_UTILITY = "higher = more utility"
LESS_UTILITY = "higher = less utility"  # distances between synthetic and real images
NEUTRAL = "descriptive"  # sizes, settings, names: neither better nor worse

ROW, SIM, HOLD, UTIL, FID, MIA, INV, DP, CANARY, GATE = (
    "row",
    "similarity",
    "holdout tests",
    "utility",
    "fidelity",
    "membership attacks",
    "model inversion",
    "DP claim",
    "canary audit",
    "verdict",
)
# the order of the groups in docs/columns.md
GROUPS = (ROW, GATE, SIM, HOLD, UTIL, FID, INV, MIA, DP, CANARY)


@dataclass(frozen=True)
class Column:
    """One results column.

    Attributes:
        name: lower-case letters, digits and underscores; may hold the placeholders {metric}
            (ssim, haarpsi), {level}, {family}, {score} (reports/columns.py PLACEHOLDERS).
        meaning: what it measures, in words.
        range: its values ("[0, 1]", "integer >= 0", "text"...).
        direction: which way is worse (MORE_LEAKAGE, LESS_LEAKAGE, MORE_UTILITY, LESS_UTILITY,
            NEUTRAL).
        group: its table in docs/columns.md (one of GROUPS).
    """

    name: str
    meaning: str
    range: str
    direction: str
    group: str

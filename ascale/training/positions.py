"""Where `ascale.fit` steers a position-tied intervention made with ``positions="auto"`` (the
default of `ActivationScalars` and `SteeringVectors`): the last `LAST` positions of the prompts.

A scalar tied to a position index meets a different token in every prompt of a user's set,
while the last positions are where the next token is computed. Measured on the small
hand-written sets and on CCC and IOI (``benchmarks/studies/results/positions.json``, fit's defaults,
70/30 splits, scalars on ``attn_out,mlp_out``, test flips +1 / -1 and KL):

| set (train / test prompts) | every position | last 3 | last |
|---|---|---|---|
| pronouns (34 / 14) | 0.71 / 1.00, KL 0.26 | 1.00 / 1.00, KL 0.27 | 1.00 / 1.00, KL 0.39 |
| plural (34 / 14) | 0.71 / 1.00, KL 0.33 | 0.93 / 1.00, KL 0.34 | 0.93 / 1.00, KL 0.31 |
| antonyms (35 / 15) | 0.80 / 1.00, KL 1.04 | 0.60 / 1.00, KL 0.98 | 0.53 / 1.00, KL 0.96 |
| country_language (35 / 15) | 0.53 / 1.00, KL 0.31 | 0.53 / 1.00, KL 0.35 | 0.53 / 1.00, KL 0.33 |
| CCC (70 / 30) | 1.00 / 0.97, KL 1.20 | 1.00 / 0.97, KL 0.93 | 0.97 / 0.90, KL 0.62 |
| IOI (70 / 30) | 1.00 / 1.00, KL 0.56 | 0.97 / 1.00, KL 0.48 | 0.97 / 1.00, KL 0.52 |

The last 3 positions: better on two small sets, worse on antonyms, level on country_language,
and on CCC and IOI as good at a lower KL; the last position alone missed CCC's backward flips.

The choice is reported in ``FitResult.settings`` (``positions``: the positions bound, counted
from the start; ``positions_rule``: how they were chosen), printed by ``ascale fit`` and written
to its ``metrics.json``; ``positions=`` (``--positions``) overrides it.
"""

from typing import Any

from ascale.data import ContrastSet
from ascale.interventions import Intervention

__all__ = ["LAST", "auto_positions", "bind_for_fit"]

LAST = 3


def auto_positions(n_pos: int) -> tuple[int, ...]:
    """The positions ``"auto"`` steers in prompts of `n_pos` tokens, counted from the end: the
    last `LAST` (every position of shorter prompts).

    Example:
        >>> auto_positions(12), auto_positions(2)
        ((-3, -2, -1), (-2, -1))
    """
    return tuple(range(-min(LAST, n_pos), 0))


def bind_for_fit(intervention: Intervention, data: ContrastSet) -> dict[str, Any]:
    """Bind a position-tied `intervention` to `data`'s prompt length, at `auto_positions` where
    its positions are ``"auto"``; what ``FitResult.settings`` reports of the positions."""
    rule = "given" if intervention.position_tied else "shared over positions, any prompt length"
    if intervention.position_tied and not intervention.is_bound:
        n_pos = data.n_pos  # PromptLengthError on prompts of several lengths
        if intervention.positions == "auto":
            intervention.bind(n_pos, auto_positions(n_pos))
            rule = f"auto: the last {min(LAST, n_pos)} of {n_pos} positions"
        else:
            intervention.bind(n_pos)
    positions = intervention.positions
    return {
        "positions": positions if isinstance(positions, str) else list(positions),
        "positions_rule": rule,
    }

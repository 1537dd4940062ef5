"""The three-term objective: effectiveness, faithfulness, minimality.

With ``delta = logit(wrong) - logit(correct)`` at the answer position:

- effectiveness: ``max(0, m - delta(beta=+1)) + max(0, m + delta(beta=-1))``, margin ``m``;
- faithfulness: ``lambda_faith * [KL(p_clean || p(beta=+1)) + KL(p_clean || p(beta=-1))]`` over
  the vocabulary without the two answer tokens, renormalised;
- minimality: ``lambda_min * ||theta||_1``.

The first two are averaged over the prompts of a batch (so weights do not depend on batch size).
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ascale import _checks

__all__ = ["Objective", "answer_logit_diff", "masked_kl", "masked_log_probs"]

# A finite stand-in for -inf: exp() of it is 0, and differences of it stay finite, so masked
# entries add exactly 0 to the KL and no NaN reaches the gradients.
_MASKED = -1e9


@dataclass(frozen=True)
class Objective:
    """Weights of the three terms.

    Args:
        margin: logits by which each direction must flip (the hinge margin ``m``).
        lambda_faith: weight of the faithfulness KL.
        lambda_min: weight of the L1 norm of the parameters.
    """

    margin: float = 2.0
    lambda_faith: float = 1.0
    lambda_min: float = 1e-2

    def __post_init__(self) -> None:
        for name in ("margin", "lambda_faith", "lambda_min"):  # >= 0, and float32 holds it
            _checks.real(f"Objective.{name}", getattr(self, name), low=0.0)

    def __call__(
        self,
        delta_pos: Float[Tensor, " batch"],
        delta_neg: Float[Tensor, " batch"],
        kl_pos: Float[Tensor, " batch"],
        kl_neg: Float[Tensor, " batch"],
        l1: Float[Tensor, ""],
    ) -> dict[str, Tensor]:
        """The loss and its terms, from the answer logit differences and KLs of both signs."""
        effectiveness = (
            torch.relu(self.margin - delta_pos) + torch.relu(self.margin + delta_neg)
        ).mean()
        faithfulness = (kl_pos + kl_neg).mean()
        loss = effectiveness + self.lambda_faith * faithfulness + self.lambda_min * l1
        return {
            "loss": loss,
            "effectiveness": effectiveness,
            "faithfulness": faithfulness,
            "l1": l1,
        }


def answer_logit_diff(
    logits: Float[Tensor, "batch d_vocab"],
    correct_ids: Int[Tensor, " batch"],
    wrong_ids: Int[Tensor, " batch"],
) -> Float[Tensor, " batch"]:
    """``logit(wrong) - logit(correct)`` for each prompt."""
    picked = logits.gather(1, torch.stack([wrong_ids, correct_ids], dim=1))
    return picked[:, 0] - picked[:, 1]


def masked_log_probs(
    logits: Float[Tensor, "batch d_vocab"],
    correct_ids: Int[Tensor, " batch"],
    wrong_ids: Int[Tensor, " batch"],
) -> Float[Tensor, "batch d_vocab"]:
    """Log-probabilities over the vocabulary without the two answers, renormalised."""
    index = torch.stack([correct_ids, wrong_ids], dim=1)
    masked = logits.scatter(1, index, _MASKED)
    return torch.log_softmax(masked, dim=-1)


def masked_kl(
    clean_log_probs: Float[Tensor, "batch d_vocab"],
    steered_logits: Float[Tensor, "batch d_vocab"],
    correct_ids: Int[Tensor, " batch"],
    wrong_ids: Int[Tensor, " batch"],
) -> Float[Tensor, " batch"]:
    """``KL(p_clean || p_steered)`` without the two answers; `clean_log_probs` already masked."""
    steered = masked_log_probs(steered_logits, correct_ids, wrong_ids)
    return (clean_log_probs.exp() * (clean_log_probs - steered)).sum(-1)

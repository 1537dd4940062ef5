import pytest
import torch
from jaxtyping import TypeCheckError

import ascale
from ascale.training.objective import Objective, answer_logit_diff, masked_kl, masked_log_probs


def test_logit_diff_is_wrong_minus_correct():
    logits = torch.tensor([[0.0, 1.0, 5.0], [3.0, 0.0, 0.0]])
    delta = answer_logit_diff(logits, torch.tensor([1, 0]), torch.tensor([2, 1]))
    assert delta.tolist() == [4.0, -3.0]


def test_masked_kl_ignores_the_answers_and_is_zero_for_equal_rest():
    torch.manual_seed(0)
    clean = torch.randn(4, 50)
    steered = clean.clone()
    correct, wrong = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])
    steered[torch.arange(4), correct] += 10.0  # moving the answers changes nothing else
    steered[torch.arange(4), wrong] -= 10.0
    kl = masked_kl(masked_log_probs(clean, correct, wrong), steered, correct, wrong)
    torch.testing.assert_close(kl, torch.zeros(4), atol=1e-6, rtol=0)
    steered[:, 20] += 3.0
    kl = masked_kl(masked_log_probs(clean, correct, wrong), steered, correct, wrong)
    assert (kl > 1e-3).all()


def test_masked_log_probs_renormalise_without_answers():
    lp = masked_log_probs(torch.randn(2, 10), torch.tensor([0, 1]), torch.tensor([2, 3]))
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2))
    assert lp.exp()[0, 0] < 1e-30 and lp.exp()[1, 3] < 1e-30


def test_hinge_is_zero_once_both_directions_pass_the_margin():
    objective = Objective(margin=2.0, lambda_faith=0.5, lambda_min=0.1)
    zeros = torch.zeros(3)
    terms = objective(
        torch.full((3,), 2.5), torch.full((3,), -2.5), zeros, zeros, torch.tensor(4.0)
    )
    assert terms["effectiveness"] == 0 and terms["loss"] == 0.1 * 4.0
    terms = objective(torch.zeros(3), torch.zeros(3), zeros + 1, zeros, torch.tensor(0.0))
    assert terms["effectiveness"] == 4.0 and terms["loss"] == 4.0 + 0.5


def test_gradients_stay_finite_through_the_mask():
    logits = torch.randn(2, 10, requires_grad=True)
    ids = (torch.tensor([0, 1]), torch.tensor([2, 3]))
    kl = masked_kl(masked_log_probs(torch.randn(2, 10), *ids), logits, *ids)
    kl.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_a_wrong_shape_is_caught_by_the_run_time_checks():
    """The test run checks the package's jaxtyping annotations with beartype (pyproject's
    ``--jaxtyping-packages``): one answer for three prompts, which ``gather`` would silently
    accept (it returns one value), is refused by ``correct_ids: Int[Tensor, " batch"]``."""
    logits, one = torch.randn(3, 10), torch.tensor([1])
    assert logits.gather(1, torch.stack([one, one], dim=1)).shape == (1, 2)  # silent without
    with pytest.raises(TypeCheckError, match="correct_ids"):
        answer_logit_diff(logits, one, one)


@pytest.mark.parametrize("field", ["margin", "lambda_faith", "lambda_min"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_objective_refuses_non_finite_or_negative_weights(field, value):
    with pytest.raises(ascale.AscaleError, match=field):
        ascale.Objective(**{field: value})

"""evaluate and Metrics: what the measures say of an intervention that does nothing."""

import ascale
from ascale.interventions import ActivationScalars


def test_identity_intervention_measures_as_the_clean_model(tiny_gpt2, tiny_rows):
    iv = ActivationScalars(tiny_gpt2, sites="attn_out,mlp_out", n_pos=tiny_rows.n_pos)
    m = ascale.evaluate(tiny_gpt2, iv, tiny_rows)
    assert m.faithfulness_kl == 0.0 and m.l1 == 0.0 and m.n_active == 0
    assert m.logit_diff_forward == m.logit_diff_backward == m.logit_diff_clean
    assert m.n_prompts == len(tiny_rows) and m.n_params == 2 * 2 * tiny_rows.n_pos


def test_honest_rates_give_a_do_nothing_intervention_no_credit(tiny_gpt2, tiny_rows):
    iv = ActivationScalars(tiny_gpt2, sites="mlp_out", n_pos=tiny_rows.n_pos)
    m = ascale.evaluate(tiny_gpt2, iv, tiny_rows)
    assert m.flip_rate_backward == m.clean_rate_backward
    assert m.flip_rate_forward == m.clean_rate_forward
    for moved in (m.moved_rate_forward, m.moved_rate_backward):
        assert moved == 0.0 or moved != moved  # 0, or NaN when no prompt was left to move

"""fit: mechanics on tiny models, real steering on the embedded SmolLM2 (evaluate's tests are in
test_metrics.py, the forward passes' in test_passes.py)."""

from pathlib import Path

import pytest
import torch

import ascale
from ascale import _tl
from ascale.data import ContrastSet
from ascale.errors import AscaleError, PromptLengthError
from ascale.interventions import METHODS, ActivationScalars, SteeringVectors
from ascale.testing import ioi_like_rows
from ascale.training import _memory
from conftest import TINY_ROWS

ROOT = Path(__file__).resolve().parents[2]  # the repository


def test_fit_is_deterministic_and_leaves_the_model_alone(tiny_gpt2, tiny_rows):
    before = {k: v.clone() for k, v in tiny_gpt2.state_dict().items()}
    runs = []
    for _ in range(2):
        iv = ActivationScalars(tiny_gpt2, sites="heads,mlp_out")
        result = ascale.fit(
            tiny_gpt2,
            iv,
            tiny_rows,
            steps=5,
            batch_size=4,
            seed=3,
            stop="none",
            progress=False,
        )
        runs.append(torch.cat([p.detach().flatten() for p in iv.parameters()]))
    assert torch.equal(runs[0], runs[1]) and runs[0].abs().sum() > 0
    assert result.steps_run == 5 and not result.stopped_early
    columns = ["loss", "effectiveness", "faithfulness", "l1", "flipped"]
    assert list(result.to_frame().columns) == columns
    after = tiny_gpt2.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and not p.requires_grad for p in tiny_gpt2.parameters())


def test_position_tied_fit_refuses_mixed_lengths(tiny_gpt2):
    data = ContrastSet.from_rows(
        [*TINY_ROWS, {"prompt": "Mary", "correct": " Bob", "wrong": " Eve"}], tiny_gpt2
    )
    with pytest.raises(PromptLengthError, match="differ in token length"):
        ascale.fit(tiny_gpt2, ActivationScalars(tiny_gpt2, sites="attn_out"), data, steps=1)


def test_scalars_use_under_a_hundredth_of_the_vectors_parameters(smol):
    scalars = ActivationScalars(smol, sites="attn_out,mlp_out", n_pos=12)
    vectors = SteeringVectors(smol, sites="attn_out,mlp_out", n_pos=12)
    assert scalars.n_params == 30 * 2 * 12
    assert scalars.n_params * 100 <= vectors.n_params


@pytest.mark.real
@pytest.mark.parametrize("task", ["ccc", "ioi"])
def test_default_fit_flips_held_out_prompts_both_ways_in_a_few_steps(smol, task):
    data = getattr(ascale.tasks, task)(smol, n=60, seed=0)
    train, test = data.split(test_size=0.3, seed=0)
    scalars = ActivationScalars(smol, sites="attn_out,mlp_out", positions="all")
    result = ascale.fit(smol, scalars, train, seed=0, progress=False)  # every setting default
    metrics = ascale.evaluate(smol, scalars, test)
    print(task, result.steps_run, result.stop_reason, metrics)
    # issue 9: the defaults before it ran all 100 steps (their stop waited for every training
    # prompt to flip by the margin, which some never do); now the fit stops once 95% flipped
    assert result.steps_run <= 40 and "flipped both ways" in result.stop_reason
    assert metrics.flip_rate_forward >= 0.9
    assert metrics.flip_rate_backward >= 0.9
    assert metrics.logit_diff_forward > 0 > metrics.logit_diff_backward
    assert 0 < metrics.faithfulness_kl < 1.5  # measured 0.92 on CCC: steering is not free
    assert metrics.n_params == 30 * 2 * data.n_pos


@pytest.mark.real
def test_default_fit_flips_held_out_prompts_of_a_small_user_set(smol):
    # issue 9: a user's own 48-row jsonl set (benchmarks/data/pronouns.jsonl: 34 train / 14
    # test), steering vectors, every fit setting left at its default; measured 0.79 / 1.00 at
    # KL 0.16 (benchmarks/studies/results/fit_defaults.json, "new"). The defaults before that issue (lr
    # 0.1, stop once every training prompt flipped) gave 0.43 / 0.86 at KL 0.77 ("old"), which
    # fails every assertion below; the scalars' old and new defaults are the same run on this
    # set (it never reaches the flip target), so they cannot tell old from new here.
    data = ascale.load_jsonl(ROOT / "benchmarks" / "data" / "pronouns.jsonl", smol)
    train, test = data.split(test_size=0.3, seed=0)
    vectors = SteeringVectors(smol, sites="attn_out,mlp_out", positions="all")  # as measured
    result = ascale.fit(smol, vectors, train, seed=0, progress=False)
    metrics = ascale.evaluate(smol, vectors, test)
    print(result.steps_run, result.stop_reason, metrics)
    assert metrics.flip_rate_backward == 1.0  # the model's own answer, kept on every prompt
    assert metrics.flip_rate_forward >= 0.6  # 11 of 14 measured, 9 needed
    assert metrics.faithfulness_kl <= 0.5


def test_train_stop_settles_for_its_steps_after_reaching_the_flip_target(tiny_gpt2, tiny_rows):
    runs = {}
    # the random tiny model flips at most 4 of its 10 prompts: target 0.3 is met, 1.0 never
    for target, settle in ((0.3, 0), (0.3, 5), (0.3, None), (1.0, 0)):
        iv = ActivationScalars(tiny_gpt2, sites="attn_out,mlp_out")
        runs[target, settle] = ascale.fit(
            tiny_gpt2, iv, tiny_rows, steps=60, lr=0.2, batch_size=len(tiny_rows),
            flip_target=target, settle=settle, seed=0, progress=False,
        )  # fmt: skip
    at_once, flipped = runs[0.3, 0], runs[0.3, 0].history["flipped"]
    reached = at_once.steps_run
    assert at_once.stopped_early and reached == len(flipped) < 60
    assert flipped[-1] >= 0.3 and all(f < 0.3 for f in flipped[:-1])  # the first step that did
    assert f"flipped both ways (target 30%) at step {reached}" in at_once.stop_reason
    assert at_once.settings["flip_target"] == 0.3
    settled = runs[0.3, 5]
    assert settled.steps_run == reached + 5 and settled.history["flipped"][:reached] == flipped
    # the default: as many settling steps as reaching the target took
    doubled = runs[0.3, None]
    assert doubled.steps_run == 2 * reached and doubled.settings["settle"] == reached
    assert f"then {reached} settling steps" in doubled.stop_reason
    assert runs[1.0, 0].steps_run == 60 and not runs[1.0, 0].stopped_early
    for bad, match in (({"flip_target": 0.0}, "flip_target must be a share in"),
                       ({"settle": -1}, "settle must be None .* or a whole number")):  # fmt: skip
        with pytest.raises(AscaleError, match=match):
            ascale.fit(tiny_gpt2, iv, tiny_rows, steps=1, **bad)


def test_validation_stop_keeps_the_best_step_and_says_so(tiny_gpt2, tiny_rows):
    iv = ActivationScalars(tiny_gpt2, sites="mlp_out")
    result = ascale.fit(
        tiny_gpt2, iv, tiny_rows, steps=30, stop="validation", eval_every=2, patience=3,
        seed=1, progress=False,
    )  # fmt: skip
    assert result.settings["stop"] == "validation" and result.settings["n_val"] == 2
    vals = dict(zip(result.history["val_step"], result.history["val_loss"], strict=True))
    assert result.kept_step == min(vals, key=vals.get)  # the step of the best validation loss
    assert f"kept the parameters of step {result.kept_step}" in result.stop_reason
    frame = result.to_frame()
    assert len(frame) == result.steps_run and "val_loss" in frame


def test_proximal_sparsity_leaves_exact_zeros_where_adam_does_not(tiny_gpt2, tiny_rows):
    zeros = {}
    for sparsity in ("l1", "proximal"):
        iv = ActivationScalars(tiny_gpt2, sites="heads,mlp_out", positions="all")  # 150 scalars
        ascale.fit(
            tiny_gpt2, iv, tiny_rows, steps=30, sparsity=sparsity, stop="none", seed=0,
            objective=ascale.Objective(lambda_min=0.002), progress=False,
        )  # fmt: skip
        flat = torch.cat([p.detach().flatten() for p in iv.parameters()])
        zeros[sparsity] = int((flat == 0).sum())
        assert flat.abs().sum() > 0
    # Adam leaves only the scalars no gradient reaches at zero (e.g. the last layer's earlier
    # positions); the soft-threshold zeroes every scalar the objective does not need
    assert zeros["proximal"] > zeros["l1"] + 20


@pytest.mark.parametrize("method", ["scalars", "vectors"])
def test_each_sparsity_mode_takes_its_own_default_rate(tiny_gpt2, tiny_rows, method):
    # the proximal step needs ~10x Adam's rate for vectors (benchmarks/studies/results/tradeoffs.json):
    # a sweep with sparsity="proximal" and no lr must not under-train them at Adam's 0.01
    defaults = METHODS[method].fit_defaults
    rates = {}
    for sparsity in ("l1", "proximal"):
        iv = ascale.interventions.build(method, tiny_gpt2, sites="mlp_out")
        done = ascale.fit(
            tiny_gpt2, iv, tiny_rows, steps=1, sparsity=sparsity, stop="none", progress=False
        )
        rates[sparsity] = done.settings["lr"]
    assert rates == {"l1": defaults.lr, "proximal": defaults.proximal_lr}
    iv = ascale.interventions.build(method, tiny_gpt2, sites="mlp_out")
    given = ascale.fit(tiny_gpt2, iv, tiny_rows, steps=1, lr=0.05, sparsity="proximal",
                       stop="none", progress=False)  # fmt: skip
    assert given.settings["lr"] == 0.05
    if method == "vectors":
        assert defaults.proximal_lr == 10 * defaults.lr


def test_keep_mask_holds_other_parameters_at_the_identity(tiny_gpt2, tiny_rows):
    iv = ActivationScalars(tiny_gpt2, sites="mlp_out")
    iv.bind(tiny_rows.n_pos)
    keep = torch.zeros(iv.params["mlp_out"].shape)
    keep[1, -1] = 1.0
    ascale.fit(
        tiny_gpt2, iv, tiny_rows, steps=5, keep={"mlp_out": keep}, stop="none", progress=False
    )
    param = iv.params["mlp_out"].detach()
    assert param[1, -1] != 0 and int((param != 0).sum()) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": float("nan")}, "lr must be"),
        ({"lr": -1.0}, "lr must be"),
        ({"steps": 0}, "steps must be"),
        ({"sparsity": "l0"}, "sparsity must be"),
        ({"stop": "never"}, "stop must be"),
    ],
)
def test_bad_settings_are_refused_before_any_step(tiny_gpt2, tiny_rows, kwargs, message):
    iv = ActivationScalars(tiny_gpt2, sites="mlp_out")
    with pytest.raises(ascale.AscaleError, match=message):
        ascale.fit(tiny_gpt2, iv, tiny_rows, progress=False, **kwargs)


def test_a_step_that_would_not_fit_in_memory_is_refused_before_any_work(tiny_gpt2, monkeypatch):
    data = ContrastSet.from_rows(ioi_like_rows(12)[0], tiny_gpt2)
    scalars = ActivationScalars(tiny_gpt2, sites="heads", n_pos=data.n_pos)
    per_prompt = _memory.step_bytes(tiny_gpt2, 2, data.n_pos)
    monkeypatch.setattr(_memory, "available_bytes", lambda model: 3 * per_prompt + 1)
    ran = []
    monkeypatch.setattr(_tl, "run", lambda *a, **k: ran.append(1))
    with pytest.raises(
        ascale.AscaleError, match=r"8 prompts of .* tokens needs about .* lower batch_size to 3"
    ):
        ascale.fit(tiny_gpt2, scalars, data, steps=2, batch_size=8, progress=False)
    assert not ran  # nothing ran: not even the clean pass
    monkeypatch.setattr(_memory, "available_bytes", lambda model: per_prompt // 2)
    with pytest.raises(ascale.AscaleError, match="shorten the prompts"):
        ascale.fit(tiny_gpt2, scalars, data, steps=2, batch_size=8, progress=False)


def test_the_step_memory_estimate_matches_the_measured_step():
    """The estimate's constants against the step measured by benchmarks/memory.py on SmolLM2."""
    import json
    from types import SimpleNamespace

    smol = SimpleNamespace(
        cfg=SimpleNamespace(d_model=576, d_mlp=1536, n_heads=9, n_layers=30, dtype=torch.float32)
    )
    results = ROOT / "benchmarks" / "results" / "memory.json"
    measured = json.loads(results.read_text())["median_mb"]["ascale"]["step_extra_mb"] * 2**20
    estimate = _memory.step_bytes(smol, rows=64, n_pos=12)  # batch 32 at both signs of beta
    assert 0.8 < estimate / measured < 1.25
    # what the step keeps grows with rows, quadratically with length, and only above the prefix
    assert _memory.step_bytes(smol, 128, 12) == 2 * estimate
    assert _memory.step_bytes(smol, 4, 3000) > 16 * 2**30  # the 3,000-token pair: killed at 22 GB
    assert _memory.step_bytes(smol, 64, 12, first_layer=15) == estimate // 2

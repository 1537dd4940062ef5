"""Bad inputs at the public API boundary get a clear `AscaleError` naming the value (issue 27;
docs/bad-inputs.md). The test run type-checks annotations (jaxtyping); users' runs do not, so
wrong types are passed to the functions as users get them (`inspect.unwrap`)."""

import inspect

import pytest
import torch

import ascale
from ascale import sites
from ascale.data import ContrastSet
from ascale.errors import AscaleError
from ascale.interventions import ActivationScalars, Intervention


def _user(fn):
    return inspect.unwrap(fn)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([0.5], "layer 0.5 is not a whole number; give layers of 0..1"),
        ([1.0], "layer 1.0 is not a whole number"),
        ([True], "layer True is not a whole number"),
        ("0,1", "layers must be a list of whole numbers, got '0,1'"),
        ([5], "layer 5 does not exist: the model has layers 0..1"),
    ],
)
def test_a_layer_that_is_not_a_whole_number_is_refused(tiny_gpt2, layers, message):
    # the check every layers argument passes through (sites.resolve_sites), called as users
    # get it: the test run's type check would stop a float before it
    with pytest.raises(AscaleError, match=message):
        _user(sites._layers)(layers, 2)
    assert _user(sites._layers)([0, -1, torch.tensor(1)], 2) == (0, 1)


def test_fit_under_no_grad_is_refused_naming_it(tiny_gpt2, tiny_rows):
    iv = ActivationScalars(tiny_gpt2, sites="mlp_out")
    for block in (torch.no_grad, torch.inference_mode):
        with block(), pytest.raises(AscaleError, match=r"called under torch.no_grad\(\)"):
            ascale.fit(tiny_gpt2, iv, tiny_rows, steps=1, progress=False)
    assert all(not p.requires_grad for p in tiny_gpt2.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"steps": -3}, "steps must be a positive integer, got -3"),
    ],
)
def test_fit_settings_of_the_wrong_value_or_type_are_refused(tiny_gpt2, tiny_rows, kwargs, message):
    iv = ActivationScalars(tiny_gpt2, sites="mlp_out")
    with pytest.raises(AscaleError, match=message):
        _user(ascale.fit)(tiny_gpt2, iv, tiny_rows, progress=False, **kwargs)


def test_an_empty_data_set_is_refused(tiny_gpt2):
    with pytest.raises(AscaleError, match="needs at least one row"):
        ContrastSet.from_rows([], tiny_gpt2)


@pytest.mark.parametrize("name", ["./no-such-model", "~/no/such/model", "a/b/c"])
def test_a_missing_model_folder_is_named_before_any_hub_lookup(name):
    from ascale.errors import ModelNotAvailableError

    with pytest.raises(ModelNotAvailableError, match=r"no model folder at .*embedded default"):
        ascale.load_model(name)


def test_cli_a_missing_model_folder_is_one_line(tmp_path, capsys):
    from ascale.cli import main

    argv = ["fit", "--task", "ccc", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ascale fit: error: no model folder at")
    assert not (tmp_path / "o").exists()


# ---- issue 36: non-finite numbers, misaligned rows, sizes, files, types ----


def _ranked(scalars):
    return ascale.rank_components(scalars)


def _scalars_at(model, data, value):
    iv = ActivationScalars(model, sites="mlp_out", n_pos=data.n_pos)
    with torch.no_grad():
        iv.params["mlp_out"].fill_(value)
    return iv


def test_a_beta_or_an_edit_that_overflows_float32_is_refused_naming_beta(tiny_gpt2, tiny_rows):
    # 1e39 is a finite Python float, and inf in a float32 tensor
    with pytest.raises(AscaleError, match=r"beta must be finite, got 1e\+39 \(float32 holds"):
        _scalars_at(tiny_gpt2, tiny_rows, 0.5).hooks(1e39)
    with pytest.raises(AscaleError, match="beta must be a number or a tensor"):
        _user(Intervention.hooks)(_scalars_at(tiny_gpt2, tiny_rows, 0.5), "1")
    # finite parameters whose edit overflows: a layer norm would turn it into constant logits
    huge = _scalars_at(tiny_gpt2, tiny_rows, 3e38)
    message = r"ActivationScalars at beta=1 overflows float32 \(its largest parameter magnitude"
    with pytest.raises(AscaleError, match=message):
        ascale.evaluate(tiny_gpt2, huge, tiny_rows)
    ascale.evaluate(tiny_gpt2, _scalars_at(tiny_gpt2, tiny_rows, 0.5), tiny_rows)  # fine


def test_an_objective_weight_that_overflows_stops_the_fit_naming_it(tiny_gpt2, tiny_rows):
    with pytest.raises(AscaleError, match=r"Objective.margin must be a finite number in \[0, "):
        ascale.Objective(margin=1e39)
    # float32 holds 3e38, not the effectiveness term 2 * 3e38: the loss is inf from step 1
    iv = ActivationScalars(tiny_gpt2, sites="mlp_out")
    objective = ascale.Objective(margin=3e38)
    message = r"the loss became inf at step 1: its term with Objective.margin=3e\+38 overflows"
    with pytest.raises(AscaleError, match=message):
        ascale.fit(tiny_gpt2, iv, tiny_rows, steps=3, objective=objective, progress=False)


def test_non_finite_scores_are_refused_before_ranking_naming_the_ranking(tiny_ioi):
    import dataclasses

    model, clean, corrupted = tiny_ioi
    iv = _scalars_at(model, clean, 0.0)
    with torch.no_grad():
        iv.params["mlp_out"][0, 0] = float("nan")
    with pytest.raises(AscaleError, match=r"ActivationScalars.params\['mlp_out'\] hold 1 NaN"):
        ascale.rank_components(iv)
    ranking = ascale.rank_components(_scalars_at(model, clean, 0.1))
    nan = ranking.components.assign(value=float("nan"), magnitude=float("nan"))
    broken = dataclasses.replace(ranking, components=nan)
    grid = ascale.Grid.of(iv)
    message = r"ranking 'x' has NaN or infinite scores at 30 of 30 components \(mlp_out L0 @0"
    with pytest.raises(AscaleError, match=message):  # not "shares no component with the grid"
        ascale.score_circuits(model, clean, {"x": broken}, grid=grid, corrupted=corrupted)
    with pytest.raises(AscaleError, match=message):
        ascale.agreement({"x": broken, "y": ranking})
    with pytest.raises(AscaleError, match="NaN or infinite scores"):
        ascale.AttributionResult.from_rows("x", "v", nan.drop(columns=["rank", "component"]))


def test_counterfactual_rows_of_other_rows_are_refused_wherever_taken(tiny_ioi):
    model, clean, corrupted = tiny_ioi
    shuffled = corrupted.subset(list(range(len(corrupted)))[::-1])
    message = r"corrupted row 1 \(.*\) has the correct answer .* its clean row .* must align"
    circuit = ascale.CircuitScalars(model, sites="mlp_out", n_pos=clean.n_pos)
    grid = ascale.Grid.of(circuit)
    calls = {
        "fit_circuit": lambda: ascale.fit_circuit(model, circuit, clean, shuffled, steps=1),
        "compare (random only)": lambda: ascale.compare(
            model, clean, shuffled, methods=["random"], n_random=1, sites="mlp_out"
        ),
        "score_circuits": lambda: ascale.score_circuits(
            model, clean, {}, grid=grid, corrupted=shuffled, n_random=1
        ),
        "attribution_patching": lambda: ascale.attribution_patching(model, clean, shuffled),
    }
    for name, call in calls.items():
        with pytest.raises(AscaleError, match=message):
            call()
        assert name


SIZES = {  # id: (call on (model, clean, corrupted, scalars), a piece of the message)
    "refit_ks fractional": (
        lambda m, c, x, s: _user(ascale.compare)(m, c, x, methods=["scalars"], refit_ks=[1.5]),
        "each of refit_ks must be a whole number of 1 or more, got 1.5",
    ),
    "refit_ks negative": (
        lambda m, c, x, s: ascale.compare(m, c, x, methods=["scalars"], refit_ks=[-1]),
        "each of refit_ks must be a whole number of 1 or more, got -1",
    ),
    "refit_ks beyond the grid": (
        lambda m, c, x, s: ascale.compare(
            m, c, x, methods=["scalars"], refit_ks=[1000], sites="mlp_out", progress=False
        ),
        r"each of refit_ks must be a whole number of 1..30 \(the grid's components\), got 1000",
    ),
    "zero random orders": (
        lambda m, c, x, s: ascale.compare(m, c, x, methods=["random"], n_random=0),
        "methods include 'random' but n_random=0 draws no random order",
    ),
    "patch_n fractional": (
        lambda m, c, x, s: _user(ascale.compare)(m, c, x, patch_n=1.5),
        "patch_n must be a whole number of 1 or more, got 1.5",
    ),
    "methods not names": (
        lambda m, c, x, s: _user(ascale.compare)(m, c, x, methods=[1]),
        "methods must be a method or a list of them",
    ),
    "refit_top_k beyond the grid": (
        lambda m, c, x, s: ascale.refit_top_k(m, s, ascale.rank_components(s), c, 1000),
        r"k must be a whole number of 1..30 \(the 30 components of like's grid\), got 1000",
    ),
    "refit_top_k zero": (
        lambda m, c, x, s: ascale.refit_top_k(m, s, ascale.rank_components(s), c, 0),
        "k must be a whole number of 1..30",
    ),
    "cumulative ks negative": (
        lambda m, c, x, s: ascale.cumulative_effect(m, s, c, ks=[-1, 2]),
        "each of ks must be a whole number of 1 or more, got -1",
    ),
    "score_circuits nothing to score": (
        lambda m, c, x, s: ascale.score_circuits(m, c, {}, grid=ascale.Grid.of(s), n_random=0),
        r"nothing to score: no ranking given and n_random=0",
    ),
    "agreement k fractional": (
        lambda m, c, x, s: _user(ascale.agreement)(dict.fromkeys("ab", _ranked(s)), k=2.5),
        "k must be a whole number of 1 or more, got 2.5",
    ),
}


@pytest.mark.parametrize("case", SIZES)
def test_sizes_counts_and_orders_out_of_range_are_refused_before_any_work(tiny_ioi, case):
    model, clean, corrupted = tiny_ioi
    call, message = SIZES[case]
    scalars = _scalars_at(model, clean, 0.1)
    with pytest.raises(AscaleError, match=message):
        call(model, clean, corrupted, scalars)


TYPES = {  # id: (call on (model, data), a piece of the message), as users call (no type check)
    "sites None": (
        lambda m, d: _user(sites.resolve_sites)(m, None),
        "sites must be site or hook names, as a list or comma-separated, got None",
    ),
    "sites of numbers": (
        lambda m, d: _user(sites.resolve_sites)(m, [1]),
        "sites must be site or hook names",
    ),
    "layers a number": (
        lambda m, d: _user(sites.resolve_sites)(m, "mlp_out", 3),
        r"layers must be a list of whole numbers, got 3; give some of 0..1 \(e.g. \[3\]",
    ),
    "data a list of rows": (
        lambda m, d: _user(ascale.evaluate)(m, _scalars_at(m, d, 0.1), d.rows()),
        "data must be a ContrastSet .* got list",
    ),
    "fit on an empty subset": (
        lambda m, d: _user(ascale.fit)(m, ActivationScalars(m, sites="mlp_out"), d.subset([])),
        r"data holds no prompts \(an empty subset\?\)",
    ),
    "patching an empty subset": (
        lambda m, d: _user(ascale.activation_patching)(m, d.subset([]), sites="mlp_out"),
        "data holds no prompts",
    ),
    "evaluate batch_size 0": (
        lambda m, d: _user(ascale.evaluate)(m, _scalars_at(m, d, 0.1), d, batch_size=0),
        "batch_size must be a whole number of 1 or more, got 0",
    ),
    "patching max_batch 0": (
        lambda m, d: _user(ascale.activation_patching)(m, d, sites="mlp_out", max_batch=0),
        "max_batch must be a whole number of 1 or more, got 0",
    ),
    "attribution batch_size 0": (
        lambda m, d: _user(ascale.attribution_patching)(m, d, sites="mlp_out", batch_size=0),
        "batch_size must be a whole number of 1 or more, got 0",
    ),
    "rank sites a number": (
        lambda m, d: _user(ascale.rank_components)(_scalars_at(m, d, 0.1), sites=3),
        "sites must be a site or a list of them",
    ),
    "rows a string": (
        lambda m, d: _user(ContrastSet.from_rows.__func__)(ContrastSet, "Rome is in", m),
        r"rows must be a list of \{'prompt', 'correct', 'wrong'\} objects, got str",
    ),
    "test_size a string": (
        lambda m, d: _user(ContrastSet.split)(d, test_size="0.3"),
        "test_size must be a share in \\(0, 1\\), such as 0.3, got '0.3'",
    ),
    "fit_circuit lr beyond float32": (
        lambda m, d: _user(ascale.fit_circuit)(
            m, ascale.CircuitScalars(m, sites="mlp_out", n_pos=d.n_pos), d, lr=1e39
        ),
        r"lr must be a finite number in \(0, 3.40282e\+38\] \(float32 holds",
    ),
    "save to no path": (
        lambda m, d: _user(ascale.save)(_scalars_at(m, d, 0.1), None),
        r"path must be a file or folder path \(a string\), got None",
    ),
    "evaluate no intervention": (
        lambda m, d: _user(ascale.evaluate)(m, None, d),
        "intervention must be an Intervention .* got NoneType None",
    ),
    "fit objective a string": (
        lambda m, d: _user(ascale.fit)(m, ActivationScalars(m, sites="mlp_out"), d, objective="x"),
        "objective must be an Objective, got str 'x'",
    ),
    "compare fit_options a string": (
        lambda m, d: _user(ascale.compare)(m, d, methods=["scalars"], fit_options="fast"),
        r"fit_options must be a dict \(method -> dict\), got str 'fast'",
    ),
    "score_circuits no grid": (
        lambda m, d: _user(ascale.score_circuits)(m, d, {}, grid=None, n_random=1),
        "grid must be a Grid",
    ),
    "agreement of one ranking": (
        lambda m, d: _user(ascale.agreement)(_ranked(_scalars_at(m, d, 0.1))),
        "agreement needs at least two rankings, got one AttributionResult",
    ),
    "task n fractional": (
        lambda m, d: _user(ascale.tasks.ioi)(m, n=1.5),
        "n must be a whole number of 1 or more, got 1.5",
    ),
    "sweep lambda_min a number": (
        lambda m, d: _user(ascale.sweep)(m, d, d, lambda_min=0.1),
        "lambda_min must be a non-empty list of numbers, got 0.1",
    ),
}


@pytest.mark.parametrize("case", TYPES)
def test_wrong_types_and_empty_data_get_an_error_naming_the_value(tiny_gpt2, tiny_rows, case):
    call, message = TYPES[case]
    with pytest.raises(AscaleError, match=message):
        call(tiny_gpt2, tiny_rows)


def test_a_jsonl_key_given_twice_is_refused_naming_the_line_and_key(tmp_path):
    from ascale._rows import read_jsonl

    path = tmp_path / "rows.jsonl"
    path.write_text(
        '{"prompt": "Rome is in", "correct": " Italy", "wrong": " France"}\n'
        '{"prompt": "Paris is in", "correct": " France", "wrong": " Italy", "correct": " Spain"}\n'
    )
    with pytest.raises(AscaleError, match=r"rows.jsonl:2: key 'correct' appears twice"):
        read_jsonl(path)


def test_a_data_path_that_is_no_regular_file_or_unreadable_is_named(tmp_path, monkeypatch):
    import os
    from pathlib import Path

    from ascale._rows import read_jsonl

    with pytest.raises(AscaleError, match=r"^--data '/dev/null' is a character device; expect"):
        read_jsonl("/dev/null", flag="--data")
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    with pytest.raises(AscaleError, match=r"pipe.jsonl' is a named pipe; expected a jsonl"):
        read_jsonl(fifo, flag="--data")
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "Rome is in", "correct": " Italy", "wrong": " France"}\n')

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)  # as root, chmod 000 would not stop a read
    with pytest.raises(AscaleError, match=r"^--data '.*rows.jsonl' cannot be read \(Permission"):
        read_jsonl(path, flag="--data")

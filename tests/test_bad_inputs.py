"""Bad inputs at the public API boundary get a clear `AscaleError` naming the value (issue 27;
docs/bad-inputs.md). The test run type-checks annotations (jaxtyping); users' runs do not, so
wrong types are passed to the functions as users get them (`inspect.unwrap`)."""

import inspect

import pytest
import torch

import ascale
from ascale.data import ContrastSet
from ascale.errors import AscaleError
from ascale.interventions import ActivationScalars


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
    from ascale import sites

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

import json
import subprocess
import sys

import pytest

from ascale.cli import build_parser, main
from ascale.data import ContrastSet

ROWS = [
    {
        "prompt": f"When {a} and {b} went to the store, {b} gave a drink to",
        "correct": f" {a}",
        "wrong": f" {b}",
    }
    for a, b in [
        ("Mary", "John"),
        ("Alice", "Bob"),
        ("Carol", "Dave"),
        ("Eve", "Bob"),
        ("John", "Mary"),
        ("Bob", "Alice"),
        ("Dave", "Carol"),
        ("Bob", "Eve"),
    ]
    * 2
]


@pytest.mark.parametrize("command", [[], ["fit"], ["evaluate"], ["demo"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: ascale" in capsys.readouterr().out


def test_fit_then_evaluate_writes_the_promised_files(tiny_dirs, tiny_gpt2, tmp_path, capsys):
    data_file = (
        ContrastSet.from_rows(ROWS, tiny_gpt2)
        .with_length(int(ContrastSet.from_rows(ROWS, tiny_gpt2).lengths[0]))
        .to_jsonl(tmp_path / "rows.jsonl")
    )
    out = tmp_path / "run"
    code = main(
        [
            "fit",
            "--model",
            str(tiny_dirs["gpt2"]),
            "--data",
            str(data_file),
            "--method",
            "scalars",
            "--sites",
            "attn_out,mlp_out",
            "--steps",
            "3",
            "--seed",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    for name in ("intervention.safetensors", "intervention.json", "metrics.json", "test.jsonl"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    keys = {
        "flip_rate_forward",
        "flip_rate_backward",
        "logit_diff_forward",
        "logit_diff_backward",
        "faithfulness_kl",
        "n_params",
        "l1",
        "n_active",
    }
    assert set(metrics) == {"train", "test"} and keys <= set(metrics["test"])
    meta = json.loads((out / "intervention.json").read_text())
    assert meta["metadata"]["hyperparameters"]["steps"] == 3
    assert main(["evaluate", "--intervention", str(out), "--data", str(out / "test.jsonl")]) == 0
    evaluated = json.loads((out / "eval.json").read_text())
    assert evaluated["n_prompts"] == metrics["test"]["n_prompts"]
    assert evaluated["logit_diff_forward"] == pytest.approx(metrics["test"]["logit_diff_forward"])
    assert "flip +1" in capsys.readouterr().out


def test_bad_input_is_an_error_message_not_a_traceback(tiny_dirs, tmp_path, capsys):
    data_file = tmp_path / "rows.jsonl"
    data_file.write_text(json.dumps(ROWS[0]) + "\n")
    code = main(
        [
            "fit",
            "--model",
            str(tiny_dirs["gpt2"]),
            "--data",
            str(data_file),
            "--sites",
            "attn_outt",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 1
    assert "closest: 'attn_out'" in capsys.readouterr().err


def test_console_script_is_installed():
    done = subprocess.run(
        [sys.executable, "-m", "ascale.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "fit" in done.stdout and "demo" in done.stdout


def test_cli_defaults_match_the_library_defaults():
    import inspect

    from ascale import Objective, fit

    args = build_parser().parse_args(["fit", "--task", "ccc", "--out", "x"])
    defaults = inspect.signature(fit).parameters
    assert args.steps == defaults["steps"].default and args.lr == defaults["lr"].default
    assert args.batch_size == defaults["batch_size"].default
    objective = Objective()
    assert (args.margin, args.lambda_faith, args.lambda_min) == (
        objective.margin,
        objective.lambda_faith,
        objective.lambda_min,
    )

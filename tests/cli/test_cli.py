import html
import json
import subprocess
import sys

import pytest

import ascale
from ascale.cli import build_parser, main
from ascale.data import ContrastSet
from ascale.testing import ioi_like_rows, ioi_rows

ROWS = ioi_rows(
    [("Mary", "John"), ("Alice", "Bob"), ("Carol", "Dave"), ("Eve", "Bob"), ("John", "Mary"),
     ("Bob", "Alice"), ("Dave", "Carol"), ("Bob", "Eve")] * 2
)  # fmt: skip


@pytest.mark.parametrize(
    "command", [[], ["fit"], ["evaluate"], ["demo"], ["generate"], ["compare"], ["sweep"]]
)
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
    assert set(metrics) == {"train", "test", "settings"} and keys <= set(metrics["test"])
    meta = json.loads((out / "intervention.json").read_text())
    # no --positions: fit chose the last 3 positions, and says so (printed, metrics.json, save)
    n = meta["n_pos"]
    chose = {"positions": [n - 3, n - 2, n - 1], "positions_rule": f"auto: the last 3 of {n} positions"}  # fmt: skip
    assert metrics["settings"] == chose and meta["positions"] == chose["positions"]
    assert meta["metadata"]["hyperparameters"]["positions_rule"] == chose["positions_rule"]
    assert meta["metadata"]["hyperparameters"]["steps"] == 3
    assert main(["evaluate", "--intervention", str(out), "--data", str(out / "test.jsonl")]) == 0
    evaluated = json.loads((out / "eval.json").read_text())
    assert evaluated["n_prompts"] == metrics["test"]["n_prompts"]
    assert evaluated["logit_diff_forward"] == pytest.approx(metrics["test"]["logit_diff_forward"])
    out = capsys.readouterr().out
    assert f"scalars: positions {chose['positions']} ({chose['positions_rule']})" in out
    assert out.count("flip rate, beta=+1") == 2  # fit's table and evaluate's
    # beside each flip rate: the clean model's rate and the share moved among the rest
    assert out.count("  clean model") == 4 and out.count("  moved (not clean)") == 4


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
    assert code == 2
    assert "closest: 'attn_out'" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["ascale", "ascale.cli"])
def test_python_m_runs_the_command(module):
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("usage: ascale")
    for command in ("fit", "evaluate", "demo", "generate", "compare", "sweep"):
        assert command in done.stdout


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


# ---- nothing lost, nothing silently wrong (issue 10) ----


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: the command must refuse before any work."""
    import ascale

    def refuse(*args, **kwargs):
        raise AssertionError("the command loaded a model before checking its inputs")

    monkeypatch.setattr(ascale, "load_model", refuse)


@pytest.fixture
def tiny_model(monkeypatch, tiny_gpt2):
    """`ascale.load_model` gives the session's tiny GPT-2 (no loading from disk)."""
    import ascale

    monkeypatch.setattr(ascale, "load_model", lambda *args, **kwargs: tiny_gpt2)
    return tiny_gpt2


@pytest.fixture
def data_file(tmp_path, tiny_gpt2):
    data = ContrastSet.from_rows(ROWS, tiny_gpt2)
    return data.with_length(int(data.lengths[0])).to_jsonl(tmp_path / "data" / "train.jsonl")


def _fit(data, out, *extra):
    return main(["fit", "--data", str(data), "--steps", "1", "--out", str(out), *extra])


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"ascale {command}: error: ") and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("extra", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_the_data_file_is_never_written_over(data_file, tmp_path, capsys, no_model, extra):
    before = data_file.read_bytes()
    for out in (data_file.parent, data_file, tmp_path):  # its folder, itself, a folder above
        assert _fit(data_file, out, *extra) == 1
        line = _one_error_line(capsys, "fit")
        assert "input" in line or "existing file" in line, line
    assert data_file.read_bytes() == before
    assert sorted(p.name for p in data_file.parent.iterdir()) == ["train.jsonl"]


def test_an_output_linked_to_the_data_file_is_refused(data_file, tmp_path, capsys, no_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").symlink_to(data_file)
    assert _fit(data_file, out, "--overwrite") == 1
    assert "holds the input" in _one_error_line(capsys, "fit")


def test_a_non_empty_out_needs_overwrite_which_replaces_the_earlier_run(
    data_file, tmp_path, capsys, tiny_model
):
    out = tmp_path / "run"
    assert _fit(data_file, out) == 0
    assert main(["evaluate", "--intervention", str(out), "--data", str(data_file)]) == 0
    assert (out / "eval.json").is_file()
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert _fit(data_file, out, "--seed", "3") == 1
    assert "is not empty" in _one_error_line(capsys, "fit")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert _fit(data_file, out, "--seed", "3", "--overwrite") == 0
    names = {p.name for p in out.iterdir()}
    assert "eval.json" not in names  # the earlier run's file is gone, not mixed in
    assert names == set(first) - {"eval.json"}
    assert (
        json.loads((out / "intervention.json").read_text())["metadata"]["hyperparameters"]["seed"]
        == 3
    )


def test_evaluate_never_writes_over_an_existing_file_without_overwrite(
    data_file, tmp_path, capsys, tiny_model
):
    out = tmp_path / "run"
    assert _fit(data_file, out) == 0
    evaluate = ["evaluate", "--intervention", str(out), "--data", str(data_file)]
    assert main(evaluate) == 0
    first = (out / "eval.json").read_bytes()
    mine = tmp_path / "mine.json"
    mine.write_text("my notes")
    capsys.readouterr()
    for argv in (evaluate, [*evaluate, "--out", str(mine)]):
        assert main(argv) == 1
        assert "exists; pass --overwrite" in _one_error_line(capsys, "evaluate")
    assert (out / "eval.json").read_bytes() == first and mine.read_text() == "my notes"
    assert main([*evaluate, "--out", str(mine), "--overwrite"]) == 0
    assert json.loads(mine.read_text())["data"] == str(data_file)
    # eval.json is the run's now; a file of the user's in the run's folder stops --overwrite
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert _fit(data_file, out, "--overwrite") == 1
    assert "did not write (notes.txt)" in _one_error_line(capsys, "fit")
    assert (out / "notes.txt").read_text() == "mine" and (out / "eval.json").read_bytes() == first


def test_overwrite_never_empties_a_folder_ascale_did_not_write(data_file, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _fit(data_file, out, "--overwrite") == 1
    assert "no ascale run wrote" in _one_error_line(capsys, "fit")
    assert (out / "notes.txt").read_text() == "mine"


def test_a_second_run_into_a_locked_out_fails_clearly(data_file, tmp_path, capsys, no_model):
    from ascale.cli._runfolder import RunFolder

    with RunFolder(tmp_path / "run") as run:
        assert _fit(data_file, run.path) == 1
        line = _one_error_line(capsys, "fit")
        assert "another ascale run" in line and "still running" in line
    assert [p.name for p in (tmp_path / "run").iterdir()] == [".ascale-run.json"]  # no lock left


def test_ctrl_c_exits_130_in_one_line_and_keeps_the_earlier_run(
    data_file, tmp_path, capsys, tiny_model, monkeypatch
):
    import ascale

    out = tmp_path / "run"
    assert _fit(data_file, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ascale, "fit", interrupted)
    assert _fit(data_file, out, "--overwrite") == 130
    err = capsys.readouterr().err
    warning, last = err.strip().splitlines()  # --overwrite names what it would replace
    assert "replacing the earlier run's 6 entries" in warning
    assert last == "ascale fit: interrupted (SIGINT); earlier outputs are as they were"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _fit(data_file, tmp_path / "new") == 130
    assert not (tmp_path / "new").exists()


def test_mixed_lengths_fail_before_training(tmp_path, capsys, tiny_model, monkeypatch):
    import ascale

    monkeypatch.setattr(ascale, "fit", lambda *a, **k: pytest.fail("trained before checking"))
    other = {"prompt": "Rome is the capital of France. Rome is in", "correct": " Italy"}
    rows = [*ROWS, {**other, "wrong": " France"}]
    path = ContrastSet.from_rows(rows, tiny_model).to_jsonl(tmp_path / "mixed.jsonl")
    assert _fit(path, tmp_path / "out") == 1
    assert "differ in token length" in _one_error_line(capsys, "fit")
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(tmp_path):
    from ascale.errors import AscaleError

    args = ["fit", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]
    with pytest.raises(AscaleError, match="does not exist"):
        main(["--debug", *args])
    with pytest.raises(AscaleError, match="does not exist"):
        main([*args, "--debug"])


def test_data_warnings_are_one_line_each(data_file, tmp_path, capsys, tiny_model, monkeypatch):
    import ascale

    monkeypatch.setattr(ascale, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    rows = [{**row, "correct": row["correct"].strip()} for row in ROWS]
    path = tmp_path / "unspaced.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _fit(path, tmp_path / "out") == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("ascale fit: warning: row(s) 0, 1, 2")
    assert "did you mean ' Mary'?" in lines[0] and len(lines) == 2


@pytest.fixture
def bad_files(tmp_path, tiny_gpt2):
    """Files a new user might pass by mistake, and one good data file and saved intervention."""
    from ascale.interventions import ActivationScalars
    from ascale.io import save

    (tmp_path / "good.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    files = {
        "latin1.jsonl": b'{"prompt": "caf\xe9", "correct": " a", "wrong": " b"}\n',
        "notjson.jsonl": b"{prompt: 1}\n",
        "number.jsonl": b'{"prompt": "Rome is in", "correct": 5, "wrong": " France"}\n',
        "null.jsonl": b'{"prompt": null, "correct": " Italy", "wrong": " France"}\n',
        "empty-prompt.jsonl": b'{"prompt": "", "correct": " Italy", "wrong": " France"}\n',
        "list.jsonl": b'["Rome is in", " Italy", " France"]\n',
        "half-corrupted.jsonl": (
            json.dumps({**ROWS[0], "corrupted": ROWS[1]["prompt"]}) + "\n" + json.dumps(ROWS[1])
        ).encode(),
        "corrupted-number.jsonl": json.dumps({**ROWS[0], "corrupted": 5}).encode(),
        "no-rows.jsonl": b"\n\n",
        "twice.jsonl": b'{"prompt": "Rome is in", "correct": " Italy", "wrong": " France", '
        b'"wrong": " Spain"}\n',
        "a-file": b"x",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "intervention.json").write_text("{oops")
    (tmp_path / "damaged" / "intervention.safetensors").write_bytes(b"")
    save(ActivationScalars(tiny_gpt2, sites="mlp_out", positions="shared"), tmp_path / "iv")
    return tmp_path


FIT = "fit --data {tmp}/good.jsonl --out {tmp}/out"
FIT_TO = "fit --data {tmp}/good.jsonl --out "
GEN = "generate --intervention {tmp}/damaged --prompt"
EVAL = "evaluate --data {tmp}/good.jsonl --intervention {tmp}/iv"
DATA = "fit --out {tmp}/out --data {tmp}/"
BAD_INPUTS = {  # id: (argv, split on spaces after formatting {tmp}; a piece of the error line)
    "data missing": (DATA + "missing.jsonl", "/missing.jsonl' does not exist"),
    "data is a folder": (DATA + "empty-dir", "is a folder; expected a jsonl file"),
    "data not utf-8": (DATA + "latin1.jsonl", "latin1.jsonl:1: not UTF-8 text (byte 0xe9"),
    "data not json": (DATA + "notjson.jsonl", "notjson.jsonl:1: not valid JSON"),
    "data number field": (DATA + "number.jsonl", "field 'correct' is int 5, not a string"),
    "data null field": (DATA + "null.jsonl", "field 'prompt' is null None, not a string"),
    "data empty prompt": (DATA + "empty-prompt.jsonl", "(row 0): field 'prompt' is empty"),
    "data not an object": (DATA + "list.jsonl", "expected an object with keys"),
    "data no rows": (DATA + "no-rows.jsonl", "holds no rows"),
    "data key twice": (DATA + "twice.jsonl", "twice.jsonl:1: key 'wrong' appears twice"),
    "data is a device": (
        "fit --out {tmp}/out --data /dev/null",
        "--data '/dev/null' is a character device; expected a jsonl file",
    ),
    "evaluate data is a device": (
        "evaluate --data /dev/zero --intervention {tmp}/iv",
        "--data '/dev/zero' is a character device",
    ),
    "layers a,b": (FIT + " --layers a,b", "--layers: 'a,b' is not comma-separated"),
    "positions last": (FIT + " --positions last", "--positions: 'last' is not 'auto', 'all'"),
    "lr -1": (FIT + " --lr -1", "--lr: '-1' is not a finite number above 0"),
    "lr nan": (FIT + " --lr nan", "--lr: 'nan' is not a finite number above 0"),
    "steps 0": (FIT + " --steps 0", "--steps: '0' is not a whole number of 1 or more"),
    "steps 1.5": (FIT + " --steps 1.5", "--steps: '1.5' is not a whole number"),
    "margin inf": (FIT + " --margin inf", "--margin: 'inf' is not a finite number"),
    "lambda-min -1": (FIT + " --lambda-min -1", "--lambda-min: '-1' is not a finite number"),
    "test-size 1": (FIT + " --test-size 1", "--test-size: '1' is not a share"),
    "unknown site": (FIT + " --sites attn_outt", "closest: 'attn_out'"),
    "out is a file": ("fit --data {tmp}/good.jsonl --out {tmp}/a-file", "is an existing file"),
    "out is a broken link": (FIT_TO + "{tmp}/dangling", "dangling' is a link to '"),
    "out is a device": (FIT_TO + "/dev/null", "'/dev/null' is a character device"),
    "out inside a file": (FIT_TO + "{tmp}/a-file/run", "a-file', which is a file"),
    "compare out is a device": ("compare --task ccc --out /dev/null", "a character device"),
    "sweep out is a broken link": ("sweep --task ccc --out {tmp}/dangling", "is a link to"),
    "no --out": ("fit --task ccc", "required: --out"),
    "prompt empty": (GEN + " ", "--prompt: the prompt is empty"),
    "beta nan": (GEN + " Hi --beta nan", "--beta: 'nan' is not a finite number"),
    "beta -inf": (GEN + " Hi --beta=-inf", "--beta: '-inf' is not a finite number"),
    "max-new-tokens 0": (GEN + " Hi --max-new-tokens 0", "--max-new-tokens: '0' is not"),
    "generate damaged save": (GEN + " Hi", "damaged/intervention.json' is not valid JSON"),
    "evaluate empty folder": (
        "evaluate --data {tmp}/good.jsonl --intervention {tmp}/empty-dir",
        "holds no saved intervention (missing intervention.json",
    ),
    "evaluate out is the data": (EVAL + " --out {tmp}/good.jsonl", "is the input"),
    "evaluate out is the save": (EVAL + " --out {tmp}/iv/intervention.json", "is the input"),
    "evaluate out is a folder": (EVAL + " --out {tmp}", "is a folder; name a file"),
    "evaluate out exists": (EVAL + " --out {tmp}/a-file", "a-file' exists; pass --overwrite"),
    "evaluate out is a device": (EVAL + " --out /dev/null --overwrite", "a character device"),
    "evaluate out is a broken link": (EVAL + " --out {tmp}/dangling", "is a link to"),
    "patch-n 0": ("compare --task ccc --out {tmp}/out --patch-n 0", "--patch-n: '0' is not"),
    "k 0": ("compare --task ccc --out {tmp}/out --k 0", "--k: '0' is not a whole number"),
    "unknown compare method": (
        "compare --task ccc --out {tmp}/out --methods scalars,activation_pathcing",
        "unknown method 'activation_pathcing' in 'scalars,activation_pathcing'; methods are",
    ),
    "a method twice": (
        "compare --task ccc --out {tmp}/out --methods random,random",
        "'random,random' names a method twice",
    ),
    "refit 0": ("compare --task ccc --out {tmp}/out --refit 0", "--refit: '0' is not a whole"),
    "refit without scalars": (
        "compare --task ccc --out {tmp}/out --methods random --refit 10",
        "--refit refits the scalars' own top k: add 'scalars' to --methods",
    ),
    "counterfactual without corrupted": (
        "compare --data {tmp}/good.jsonl --out {tmp}/out --ablation counterfactual",
        "good.jsonl' has none: give every row a 'corrupted' prompt",
    ),
    "some rows corrupted": (
        "compare --data {tmp}/half-corrupted.jsonl --out {tmp}/out",
        "row 0 carries a 'corrupted' prompt but row 1 does not",
    ),
    "corrupted a number": (
        "compare --data {tmp}/corrupted-number.jsonl --out {tmp}/out",
        "(row 0): field 'corrupted' is int 5, not a string",
    ),
    "ablation unknown": (
        "compare --task ccc --out {tmp}/out --ablation resample",
        "invalid choice",
    ),
    "sweep lambda-min": (
        "sweep --task ccc --out {tmp}/out --lambda-min 1e-3,x",
        "--lambda-min: 'x' is not a finite number of 0 or more in '1e-3,x'",
    ),
    "sweep lambda-faith": (
        "sweep --task ccc --out {tmp}/out --lambda-faith -1",
        "--lambda-faith: '-1' is not a finite number of 0 or more",
    ),
    "sweep method": ("sweep --task ccc --out {tmp}/out --method scalar", "closest: 'scalars'"),
    "sweep no --out": ("sweep --task ccc", "required: --out"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_a_bad_input_is_one_line_before_any_work(case, bad_files, capsys, no_model):
    template, piece = BAD_INPUTS[case]
    argv = template.format(tmp=bad_files).split(" ")
    assert main(argv) in (1, 2)
    line = _one_error_line(capsys, argv[0])
    assert piece in line, line
    assert not (bad_files / "out").exists()


# ---- compare and sweep (issue 8) ----


@pytest.fixture
def planted_model(monkeypatch, planted):
    """`ascale.load_model` gives the tiny GPT-2 with one planted IOI head."""
    import ascale

    model = planted[0]
    monkeypatch.setattr(ascale, "load_model", lambda *args, **kwargs: model)
    return model


def _ioi_file(path, corrupted=True, bad_row=None):
    clean, corrupt = ioi_like_rows(12)
    rows = [
        {**row, "corrupted": c["prompt"]} if corrupted else row
        for row, c in zip(clean, corrupt, strict=True)
    ]
    if bad_row is not None:  # one more token than its prompt
        rows[bad_row]["corrupted"] = rows[bad_row]["corrupted"].replace(" to", " to, to")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


COMPARE = ["--sites", "heads", "--positions", "-1", "--steps", "3", "--patch-n", "4"]


@pytest.mark.parametrize(
    ("extra", "piece"),
    [
        (
            ["--methods", "scalars", "--refit", "1,99"],
            "each of refit_ks must be a whole number of 1..2 (the grid's components), got 99",
        ),
        (["--margin", "1e39"], "Objective.margin must be a finite number in [0, 3.40282e+38]"),
    ],
    ids=["refit beyond the grid", "margin beyond float32"],
)
def test_a_size_or_weight_out_of_range_is_one_line_before_any_fit(
    planted_model, tmp_path, capsys, extra, piece
):
    """Issue 36: what the parser cannot know (the grid's size) or lets through (a finite float
    that float32 cannot hold) is refused by the API's checks, in one line."""
    data = _ioi_file(tmp_path / "rows.jsonl")
    argv = ["compare", "--data", str(data), "--out", str(tmp_path / "out")]
    argv += ["--sites", "mlp_out", "--positions", "-1", *extra]
    assert main(argv) == 1
    assert piece in _one_error_line(capsys, "compare")
    assert not (tmp_path / "out").exists()


def test_compare_with_corrupted_rows_scores_every_method(tmp_path, capsys, planted_model):
    data = _ioi_file(tmp_path / "mine.jsonl")
    out = tmp_path / "out"
    assert main(["compare", "--data", str(data), *COMPARE, "--refit", "1", "--out", str(out)]) == 0
    result = json.loads((out / "compare.json").read_text())
    summary = {row["method"]: row for row in result["summary"]}
    methods = ["scalars", "circuit", "activation_patching", "attribution_patching", "random"]
    assert list(summary) == methods
    for row in summary.values():
        assert isinstance(row["cpr"], float) and isinstance(row["cmd"], float)
    assert result["info"]["ablation"] == "counterfactual"
    assert result["info"]["counterfactuals"] == "the rows' 'corrupted' prompts"
    assert result["info"]["n_train"] + result["info"]["n_test"] == 12
    assert result["n_components"] == 2 * 4  # two layers of four heads, at the last position
    assert [row["k"] for row in result["refit"]] == [1]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Circuits" in html and "counterfactual (corrupted) prompts" in html
    printed = capsys.readouterr().out
    assert "mean ablation" not in printed
    assert all(m in printed for m in methods) and "cpr" in printed and "cmd" in printed


def test_compare_without_corrupted_rows_says_it_uses_mean_ablation(tmp_path, capsys, planted_model):
    data = _ioi_file(tmp_path / "mine.jsonl", corrupted=False)
    out = tmp_path / "out"
    assert main(["compare", "--data", str(data), *COMPARE, "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    notes = [line for line in printed if line.startswith("note: ")]
    assert len(notes) == 1 and "no 'corrupted' prompts: patching uses mean ablation" in notes[0]
    assert "circuits on the test split (mean ablation)" in printed
    result = json.loads((out / "compare.json").read_text())
    assert result["info"]["ablation"] == "mean"
    assert result["info"]["counterfactuals"] == "none in the data: mean ablation"
    assert {row["method"] for row in result["summary"]} >= {"scalars", "activation_patching"}
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Patching on 4 train prompts with mean ablation" in html


def test_a_corrupted_prompt_of_another_length_is_refused_naming_the_row(
    tmp_path, capsys, planted_model, monkeypatch
):
    import ascale

    monkeypatch.setattr(ascale, "compare", lambda *a, **k: pytest.fail("compared anyway"))
    data = _ioi_file(tmp_path / "mine.jsonl", bad_row=3)
    out = tmp_path / "out"
    assert main(["compare", "--data", str(data), *COMPARE, "--out", str(out)]) == 1
    line = _one_error_line(capsys, "compare")
    assert "row 3: the corrupted prompt" in line and "(1 row(s) differ)" in line, line
    assert not out.exists()


def test_sweep_writes_one_row_per_method_weight_and_split(tmp_path, capsys, tiny_model):
    data = ContrastSet.from_rows(ROWS, tiny_model)
    path = data.with_length(int(data.lengths[0])).to_jsonl(tmp_path / "rows.jsonl")
    out = tmp_path / "sweep"
    argv = ["sweep", "--data", str(path), "--method", "scalars,vectors"]
    argv += ["--lambda-min", "1e-3,0.1", "--sites", "mlp_out", "--steps", "3", "--out", str(out)]
    assert main(argv) == 0
    import pandas as pd

    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == 2 * 2 * 2
    assert set(zip(table["method"], table["lambda_min"], table["split"], strict=True)) == {
        (m, lam, split)
        for m in ("scalars", "vectors")
        for lam in (1e-3, 0.1)
        for split in ("train", "test")
    }
    assert {"flip_rate_forward", "faithfulness_kl", "n_active", "moved_rate_forward"} <= set(
        table.columns
    )
    saved = json.loads((out / "sweep.json").read_text())
    assert len(saved["rows"]) == 8 and saved["info"]["fit_options"] == {"steps": 3}
    assert "Trade-offs" in (out / "report.html").read_text(encoding="utf-8")
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if "lambda_min" in line)
    assert header.split() == ["method", "lambda_min", "split", "flip+1", "flip-1", "KL", "active"]
    assert (out / ".ascale-run.json").is_file()  # a RunFolder: --overwrite rules hold
    assert main(argv) == 1
    assert "is not empty" in _one_error_line(capsys, "sweep")


def test_demo_scores_its_own_fits_as_the_map(tmp_path, capsys, tiny_model):
    out = tmp_path / "demo"
    assert main(["demo", "--steps", "2", "--n", "20", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"scalars", "vectors", "summary.json", "report.html", "compare.json"} <= names
    summary = json.loads((out / "summary.json").read_text())
    circuits = {row["method"]: row for row in summary["circuits"]}
    assert list(circuits) == [
        "scalars",
        "vectors",
        "circuit",
        "activation_patching",
        "attribution_patching",
        "random",
    ]
    # the demo's own fits are scored as they are, not fitted again; its scalars are sparse
    for method in ("scalars", "vectors"):
        assert circuits[method]["flip+1"] == summary["test"][method]["flip_rate_forward"]
    saved = json.loads((out / "scalars" / "intervention.json").read_text())
    assert saved["metadata"]["hyperparameters"]["sparsity"] == "proximal"
    assert saved["metadata"]["hyperparameters"]["settle"] == 1  # the demo's settling budget
    # measured once, on the test split: compare takes the demo's metrics of its fits
    assert set(json.loads((out / "scalars" / "metrics.json").read_text())) == {"test", "settings"}
    compared = json.loads((out / "compare.json").read_text())
    assert compared["info"]["ablation"] == "counterfactual"
    assert all(1 <= summary["steps_run"][m] <= 2 for m in ("scalars", "vectors"))  # --steps 2
    stages = summary["timings_s"]  # where the demo's time goes
    assert {"load_model", "fit_and_evaluate_scalars", "compare_activation_patching"} <= set(stages)
    assert sum(v for k, v in stages.items() if k != "compare") <= summary["wall_time_s"] + 0.5
    printed = capsys.readouterr().out
    assert "moved (not clean)" in printed and "circuits on the test split" in printed
    texts = summary["steered_text"]  # a few test prompts at beta -1, 0, +1, in the report too
    assert [row["beta"] for row in texts] == [-1.0, 0.0, 1.0] * (len(texts) // 3)
    assert {row["first"] for row in texts} <= {"correct", "wrong", "other"}
    page = (out / "report.html").read_text()
    assert "Steered text" in page and html.escape(texts[0]["text"].strip().split("\n")[0]) in page


def test_the_command_line_fits_saves_and_scores_circuit_scalars(tiny_dirs, tiny_gpt2, tmp_path):
    clean_rows, corrupt_rows = ioi_like_rows(16)
    rows = [{**c, "corrupted": x["prompt"]} for c, x in zip(clean_rows, corrupt_rows, strict=True)]
    data_file = tmp_path / "rows.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["fit", "--model", str(tiny_dirs["gpt2"]), "--method", "circuit", "--sites", "heads"]
    argv += ["--positions", "-1", "--steps", "3", "--data", str(data_file)]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    saved = ascale.load(tmp_path / "run", tiny_gpt2)
    assert isinstance(saved, ascale.CircuitScalars)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"cpr", "cmd"} <= set(metrics["test"][0])
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps(r) + "\n" for r in clean_rows))
    argv[-1] = str(bare)
    assert main([*argv, "--out", str(tmp_path / "bare")]) != 0
    assert not (tmp_path / "bare").exists()

"""Write the results' READMEs and the docs' generated tables from the JSON results.

``benchmarks/results/README.md`` holds the maintained suite's results, ``benchmarks/studies/
results/README.md`` the record's (one-off studies and GPU runs); a missing result is marked
pending. The docs take figures that appear on more than one page from the same files: each
region between ``<!-- generated: NAME -->`` and ``<!-- /generated -->`` in `GENERATED` pages is
rewritten here (`docs_tables`), and a test checks that the pages hold what this would write.

Run: ``.venv/bin/python -m benchmarks summary``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.common import RECORD, RESULTS

#: `benchmarks.studies.first_result` runs, in order: main before the first-result work, then after it
FIRST_RESULT_RUNS = ("first_result_before", "first_result_run1", "first_result_run2")


def _load(name: str, folder: Path = RESULTS) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _machine(r: dict[str, Any]) -> str:
    m = r["machine"]
    v = m.get("versions", {})
    versions = ", ".join(
        f"{k} {v[k]}" for k in ("torch", "transformer-lens", "transformers") if k in v
    )
    device = m.get("gpu") or m["cpu"]
    return (
        f"{device}, {m['cores']} cores, {m['torch_threads']} torch threads; {versions}; "
        f"load average {m['load_average_1_5_15'][0]} at the start; {m['date']}"
    )


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _step_rows(r: dict[str, Any]) -> list[list[Any]]:
    """Seconds per step and ratios to the floor, a row per configuration."""
    return [
        [
            f"`{n}`",
            f"{v['median']:.3f}",
            f"{r['ratio_to_floor'][n]:.3f}",
            f"{r['paired_ratio_to_floor'][n]:.3f}",
        ]
        for n, v in r["seconds_per_step"].items()
    ]


def step_section(r: dict[str, Any] | None, title: str) -> list[str]:
    if r is None:
        return [f"## {title}", "", "pending: run `python -m benchmarks.step`", ""]
    s = r["setup"]
    lines = [
        f"## {title}",
        "",
        f"SmolLM2-135M fp32, CCC, {s['batch_prompts']} prompts x {s['n_pos']} tokens "
        f"({s['rows_per_forward']} rows: both signs of beta), scalars on every head's z and every "
        f"MLP output ({s['n_params']} parameters), forward + backward + Adam. Medians of "
        f"{s['rounds']} interleaved rounds of {s['steps_per_round']} steps. {_machine(r)}.",
        "",
    ]
    rows = _step_rows(r)
    lines += _table(["configuration", "s / step", "ratio to floor", "paired ratio"], rows)
    if "forward_no_hooks_seconds" in r:
        lines += ["", "Forward pass only, no hooks, no grad, same 64 rows (full logits):", ""]
        rows = [
            [f"`{n}`", f"{v['median']:.3f}", f"{r['forward_ratio_to_hf'][n]:.3f}"]
            for n, v in r["forward_no_hooks_seconds"].items()
        ]
        lines += _table(["model", "s / forward", "ratio to Hugging Face"], rows)
    return [*lines, ""]


def memory_section(r: dict[str, Any] | None) -> list[str]:
    if r is None:
        return ["## Peak memory", "", "pending: run `python -m benchmarks.memory`", ""]
    lines = [
        "## Peak memory (CPU, resident set, fresh process per configuration)",
        "",
        f"Medians of {r['setup']['repeats']} processes, batch {r['setup']['batch_prompts']}. "
        "`process peak` is ru_maxrss (model loading included); `ready` is the resident set "
        "once model, data and trainer are built; `step peak` is the highest resident set "
        f"sampled during the steps. {_machine(r)}.",
        "",
    ]
    rows = []
    for c, m in r["median_mb"].items():
        ratio = r["ratio_to_floor"].get(c, {})
        rows.append(
            [
                f"`{c}`",
                m["peak_rss_mb"],
                m["ready_rss_mb"],
                m["step_peak_mb"],
                m["step_extra_mb"],
                ratio.get("step_peak_mb", ""),
                ratio.get("peak_rss_mb", ""),
            ]
        )
    header = [
        "configuration",
        "process peak MB",
        "ready MB",
        "step peak MB",
        "step peak - ready MB",
        "step peak / floor",
        "process peak / floor",
    ]
    return [*lines, *_table(header, rows), ""]


def peers_section(r: dict[str, Any] | None) -> list[str]:
    if r is None:
        return ["## Peers", "", "pending: run `python -m benchmarks.studies.peers`", ""]
    lines = [
        "## Peer libraries (same step, same process as the floor)",
        "",
        f"Status: {', '.join(f'{k}: {v}' for k, v in r['status'].items())}. {_machine(r)}.",
        "",
    ]
    rows = []
    for n, v in r["seconds_per_step"].items():
        eq = r["equivalence"].get(n, {})
        rows.append(
            [
                f"`{n}`",
                f"{v['median']:.3f}",
                f"{r['ratio_to_floor'][n]:.3f}",
                f"{eq.get('loss_abs_diff', float('nan')):.1e}",
                f"{eq.get('grad_max_rel_diff', float('nan')):.1e}",
            ]
        )
    header = ["configuration", "s / step", "ratio to floor", "|loss - floor|", "grad rel. diff"]
    lines += _table(header, rows)
    lines += [
        "",
        "ascale / peer: " + ", ".join(f"{k} {v:.3f}" for k, v in r["ascale_over_peer"].items()),
        "",
    ]
    return lines


def scaling_section(r: dict[str, Any] | None) -> list[str]:
    if r is None:
        return ["## Scaling", "", "pending: run `python -m benchmarks.scaling`", ""]
    lines = ["## Scaling (CPU)", "", f"{_machine(r)}.", ""]
    for axis, key in (("batch", "batch_prompts"), ("length", "n_pos"), ("sites", "label")):
        if axis not in r:
            continue
        rows = [
            [row[key], f"{row['floor_s']:.3f}", f"{row['ascale_s']:.3f}", row["ratio"]]
            for row in r[axis]
        ]
        name = {"batch": "batch (prompts)", "length": "prompt tokens", "sites": "sites"}[axis]
        lines += [*_table([name, "floor s/step", "ascale s/step", "ratio"], rows), ""]
    return lines


def paper_sizes_section(r: dict[str, Any] | None) -> list[str]:
    if r is None:
        return [
            "## The paper's sizes",
            "",
            "pending: run `python -m benchmarks.studies.paper_sizes`",
            "",
        ]
    runs, what = r["runs"], r["what"][:1].upper() + r["what"][1:]
    lines = [
        "## The paper's sizes (random weights, fresh process per model)",
        "",
        f"{what}. First row: {_machine(runs[0])}; each row's machine and load are in the JSON.",
        "",
    ]
    rows = []
    for run in runs:
        shape = f"{run['batch']} x {run['tokens']}" if "tokens" in run else str(run["batch"])
        if "error" in run:
            measured = [f"error: {run['error']}", "", ""]
        else:
            memory = f"{run['peak_memory_mb']} ({run['memory_kind']})"
            measured = [f"{run['step_s']:.3g}", memory, f"{run['build_s']:.0f}"]
        params = f"{run['n_params'] / 1e6:.0f}M" if "n_params" in run else ""
        rows.append(
            [run["model"], run["dtype"], run["device"], run["bridge"], params, shape, *measured]
        )
    header = [
        "model",
        "dtype",
        "device",
        "Bridge",
        "parameters (HF)",
        "batch x tokens",
        "s / step",
        "peak memory MB",
        "build s",
    ]
    return [*lines, *_table(header, rows), ""]


def localisation_section(r: dict[str, Any] | None) -> list[str]:
    if r is None:
        return [
            "## Localisation cost",
            "",
            "pending: run `python -m benchmarks.studies.localisation_cost`",
            "",
        ]
    s = r["setup"]
    lines = [
        "## Localisation cost (IOI, SmolLM2)",
        "",
        f"{s['prompts']} IOI prompts of {s['n_pos']} tokens (ABC corruption for patching), fit "
        f"batch {s['fit_batch']} with early stop (at most {s['fit_max_steps']} steps), patching "
        f"{s['patching_max_batch']} rows per forward pass. {_machine(r)}.",
        "",
    ]
    rows = []
    for g in r["grids"]:
        t = g["seconds"]
        rows.append(
            [
                f"`{g['grid']}`",
                g["components"],
                f"{t['scalars_fit_to_convergence']:.1f} ({g['fit']['steps_run']} steps)",
                f"{t['activation_patching']:.1f}",
                f"{t['attribution_patching']:.1f}",
            ]
        )
    header = [
        "grid",
        "components",
        "scalars: fit + rank, s",
        "activation patching, s",
        "attribution patching, s",
    ]
    return [*lines, *_table(header, rows), ""]


def demo_section(r: dict[str, Any] | None) -> list[str]:
    if r is None:
        return ["## End to end", "", "pending: run `python -m benchmarks.demo`", ""]
    return [
        "## End to end: `ascale demo`",
        "",
        (
            f"cold (empty `ASCALE_CACHE`: dequantise the GGUF first): {r['cold']['seconds']} s; "
            if r.get("cold")
            else "cold: not run (`--warm-only`); "
        )
        + f"warm: {r['warm_median_s']} s (median of {len(r['warm'])}). {_machine(r)}.",
        "",
    ]


def gpu_section(r: dict[str, Any] | None) -> list[str]:
    if r is None:
        return ["## GPU", "", "pending: `benchmarks/gpu/step.py` has not run on a GPU.", ""]
    lines = ["## GPU", "", f"{_machine(r)}; weights: {r['weights']}.", ""]
    rows = []
    for key, b in r["results"].items():
        for n, ms in b["ms_per_step"].items():
            mem = b["step_peak_memory_mb_above_resident"].get(n, "")
            rows.append([key, f"`{n}`", ms, b["ratio_to_floor"][n], mem])
    header = ["batch", "configuration", "ms / step", "ratio to floor", "step peak MB"]
    return [*lines, *_table(header, rows), ""]


def gpu_capture_section(r: dict[str, Any] | None) -> list[str]:
    """`benchmarks/gpu/capture.py`: the step recorded as a CUDA graph against the eager floor."""
    if r is None:
        return []
    lines = ["### GPU: a captured step (CUDA graph)", "", f"{_machine(r)}.", ""]
    rows = []
    for key, b in r["results"].items():
        for n, ms in b["ms_per_step"].items():
            rows.append([key, f"`{n}`", ms, b["ratio_to_floor"][n]])
        for n in ("floor", "ascale"):
            if f"{n}_captured_error" in b:
                cause = b[f"{n}_captured_error"].split("During handling")[0].strip()
                rows.append([key, f"`{n}_captured`", "not recorded", cause.splitlines()[-1][:90]])
    header = ["batch", "configuration", "ms / step", "ratio to eager floor"]
    return [*lines, *_table(header, rows), ""]


def gpu_profile_section(r: dict[str, Any] | None) -> list[str]:
    """`benchmarks/gpu/profile.py`: kernels and host-side operators per step."""
    if r is None:
        return []
    lines = ["### GPU: per-step profile", "", f"{_machine(r)}; batch {r['batch']}.", ""]
    rows = [
        [f"`{n}`", round(v["kernels"]), round(v["aten_ops"]), round(v["host_ms"], 1)]
        for n, v in r["results"].items()
    ]
    header = ["configuration", "kernels", "aten ops", "host ms (profiled)"]
    return [*lines, *_table(header, rows), ""]


def gpu_runs_section(checks: dict[str, Any] | None, demo: dict[str, Any] | None) -> list[str]:
    """`benchmarks/gpu/checks.py` and `benchmarks/gpu/demo.py`, one line each."""
    lines = []
    if checks is not None:
        lines += ["### GPU: device checks", "", f"{_machine(checks)}.", ""]
        for name, c in checks["results"].items():
            shown = {k: v for k, v in c.items() if k in ("max_abs_difference", "ok", "seconds")}
            if "max_abs_parameter_difference" in c:
                shown["max_abs_parameter_difference"] = c["max_abs_parameter_difference"]
            lines.append(f"- `{name}`: {shown}")
        lines.append("")
    if demo is not None:
        lines += [
            "### GPU: `ascale demo --device cuda`",
            "",
            f"{demo['demo_in_process_s']} s in process, {demo['process_wall_s']} s for the "
            f"process ({demo['weights']}, {demo['steps_each_fit']} steps a fit). {_machine(demo)}.",
            "",
        ]
    return lines


def _last_change(relative: str) -> str | None:
    """``"hash date"`` of the last commit that changed the file's content, following it across
    moves (a commit that only moved it, ``R100``, is passed over), or None if uncommitted."""
    log = common.git("log", "--follow", "--format=@%h %cs", "--name-status", "--", relative)
    for entry in (log or "").split("@")[1:]:
        head, *changes = entry.strip().splitlines()
        if not any(line.startswith("R100") for line in changes):
            return head
    return None


def provenance_section(folder: Path = RESULTS) -> list[str]:
    """Which commit wrote each result file in `folder`, and how much of the package changed since.

    A file written before `common.machine_info` recorded its commit is dated by the last
    commit that changed it (a move to the record does not count). "Package commits since" counts commits touching ``ascale/`` after
    that one: 0 means the file was measured on today's code.
    """
    if common.git("rev-parse", "HEAD") is None:
        return []
    rows = []
    for path in sorted(folder.glob("*.json")):
        relative = str(path.relative_to(common.ROOT))
        data = json.loads(path.read_text())
        machine = data.get("machine") if isinstance(data, dict) else None
        recorded = machine.get("commit") if isinstance(machine, dict) else None
        last = _last_change(relative)
        if not last:
            continue  # not committed yet
        made, day = last.split()
        base = str(recorded).removesuffix("+dirty") if recorded else made
        since = common.git("rev-list", "--count", f"{base}..HEAD", "--", "ascale")
        rows.append([f"`{path.name}`", recorded or f"{made} (added)", day, since or "?"])
    header = ["file", "commit", "date", "package commits since"]
    intro = (
        "Each file's commit: `machine.commit` where the file records it, otherwise the commit "
        "that added its last version (marked *added*; measured on that code or a little older)"
        ". Package commits since counts commits that changed "
        "`ascale/` after it: a file with commits since was measured on older code (its own "
        "section says what it measured); 0 means today's code."
    )
    return ["## Provenance", "", intro, "", *_table(header, rows), ""]


def compile_section(r: dict[str, Any] | None) -> list[str]:
    title = "## `torch.compile` on CPU (the floor, eager vs compiled)"
    if r is None:
        return [title, "", "pending: run `python -m benchmarks studies.compile_cpu --cold`", ""]
    s, c = r["setup"], r["compile_seconds"]
    rows = _step_rows(r)
    loss = r["loss_first_batch"]
    return [
        title,
        "",
        f"{s['compile']}, inductor cache {s['inductor_cache']}; CCC, {s['batch_prompts']} "
        f"prompts x {s['n_pos']} tokens, heads + mlp_out scalars; medians of {s['rounds']} "
        f"interleaved rounds of {s['steps_per_round']} steps. {_machine(r)}.",
        "",
        *_table(["configuration", "s / step", "ratio to floor", "paired ratio"], rows),
        "",
        f"Compiling: {c['first_no_grad_call']} s for the first no-grad call, "
        f"{c['first_training_step']} s for the first training step; break-even after "
        f"{r['break_even_steps']} steps. Loss of the first batch: eager {loss['eager']:.6f}, "
        f"compiled {loss['compiled']:.6f}.",
        "",
    ]


def first_result_section(runs: dict[str, dict[str, Any] | None]) -> list[str]:
    """`first_result` runs by name: the demo's seconds and plain training steps, and stages."""
    title = "## A first result: `ascale demo` in plain training steps"
    present = {name: r for name, r in runs.items() if r is not None}
    if not present:
        return [title, "", "pending: run `python -m benchmarks studies.first_result`", ""]
    rows = []
    for name, r in present.items():
        stages = r["demo"]["summary"]["timings_s"]
        rows.append(
            [
                f"`{name}`",
                f"`{r['machine'].get('commit') if 'machine' in r else '?'}`",
                r["demo_s"],
                r["plain_step_s"]["median"],
                r["demo_in_plain_steps"],
                ", ".join(f"{k} {v}" for k, v in stages.items() if k != "compare"),
            ]
        )
    targets = next(iter(present.values()))["targets"]
    return [
        title,
        "",
        f"{next(iter(present.values()))['benchmark']}; targets: {targets['seconds']} s and "
        f"{targets['plain_steps']} plain steps. Each row is one run; its JSON names the machine.",
        "",
        *_table(["run", "commit", "demo s", "plain step s", "demo in steps", "stages (s)"], rows),
        "",
    ]


def compare_cost_section(
    r: dict[str, Any] | None,
    title: str = "## `ascale compare --task ioi`: now against before the localisation work",
) -> list[str]:
    if r is None:
        return [title, "", "pending: run `python -m benchmarks studies.compare_cost`", ""]
    rows = [[label, f"`{r[label]['commit']}`", r[label]["seconds"]] for label in ("before", "now")]
    return [
        title,
        "",
        f"{r['benchmark']}. {_machine(r)}.",
        "",
        *_table(["version", "commit", "wall s"], rows),
        "",
        f"Ratio now / before: **{r['ratio_now_to_before']}** (target {r['target']}).",
        "",
    ]


#: `benchmarks.studies.circuits`' settings: each grid as the docs name it
CIRCUIT_GRIDS = {
    "ioi_last": "IOI, heads at the last position",
    "ioi_all": "IOI, heads at every position",
    "ccc": "CCC, attn_out + mlp_out at every position",
}
#: the rankings a circuits table shows, by `compare`'s method name
CIRCUIT_METHODS = {
    "circuit": "circuit scalars CPR / CMD",
    "scalars": "sparse scalars",
    "scalars_dense": "dense scalars",
    "activation_patching": "activation patching",
    "attribution_patching": "attribution patching",
    "random": "random",
}


def circuits_table(settings: tuple[str, ...], methods: tuple[str, ...]) -> list[str]:
    """CPR / CMD of each ranking on each grid, from ``studies/results/circuits_{setting}.json``
    (test split, counterfactual ablation); the circuit scalars' cells in bold."""
    rows = []
    for setting in settings:
        r = _load(f"circuits_{setting}", RECORD)
        if r is None:
            rows.append([CIRCUIT_GRIDS[setting], *["pending"] * len(methods)])
            continue
        scores = {row["method"]: row for row in r["result"]["summary"]}
        cells = [f"{scores[m]['cpr']:.2f} / {scores[m]['cmd']:.3f}" for m in methods]
        cells = [f"**{c}**" if m == "circuit" else c for m, c in zip(methods, cells, strict=True)]
        rows.append([f"{CIRCUIT_GRIDS[setting]} ({r['result']['n_components']:,})", *cells])
    header = ["task, grid (test split, counterfactual ablation)"]
    return _table(header + [CIRCUIT_METHODS[m] for m in methods], rows)


def generation_table() -> list[str]:
    """Steered generation against Hugging Face's ``generate``, from ``results/generation.json``
    (`benchmarks.generation`): seconds, the ratio to Hugging Face, ms per step."""
    r = _load("generation")
    if r is None:
        return ["No run yet: `python -m benchmarks generation`."]
    by = {(x["new_tokens"], x["mode"], x["method"]): x for x in r["rows"]}
    rows = []
    for new, mode, _ in [k for k in by if k[2] == "hf"]:
        hf = by[(new, mode, "hf")]["seconds"]
        cells = [f"{hf:.2f}"]
        for method in ("ascale_steered", "ascale_clean"):
            s = by[(new, mode, method)]["seconds"]
            cells.append(f"{s:.2f} ({s / hf:.2f}x)")
        label = f"{r['settings']['n']} prompts in one call" if mode == "batch" else "each alone"
        step = by[(new, mode, "ascale_steered")]["ms_per_new_token_step"]
        rows.append([new, label, *cells, step])
    steps = r["yardstick_s"]
    header = ["new tokens", "prompts", "Hugging Face s", "ascale steered s", "ascale clean s",
              "steered ms / step"]  # fmt: skip
    growth = ", ".join(f"{k} {v}" for k, v in r["per_token_growth_256_vs_32"].items())
    return [
        *_table(header, rows),
        "",
        f"{_machine(r)}; yardstick {steps['before']:.2f} / {steps['after']:.2f} s before / "
        f"after; load {', '.join(f'{x:.2f}' for x in r['load_1min'])}. Time per new token, "
        f"256 against 32 new tokens: {growth}.",
    ]


#: the docs' generated regions, by name: what `fill_generated` writes between the markers
GENERATED = {
    "generation_speed": generation_table,
    "circuits": lambda: circuits_table(tuple(CIRCUIT_GRIDS), tuple(CIRCUIT_METHODS)),
    "circuits_short": lambda: circuits_table(
        ("ioi_last", "ccc"), ("circuit", "activation_patching", "attribution_patching")
    ),
}
#: the pages that hold generated regions (paths from the repository root)
GENERATED_PAGES = ("README.md", "docs/circuits.md", "docs/generation.md")
_REGION = re.compile(r"(<!-- generated: (\w+)[^>]*-->\n)(.*?)(<!-- /generated -->)", re.DOTALL)


def fill_generated(text: str) -> str:
    """`text` with each ``<!-- generated: NAME ... -->`` region rewritten from the results."""

    def one(match: re.Match[str]) -> str:
        body = "\n".join(["", *GENERATED[match[2]](), "", ""])
        return match[1] + body + match[4]

    return _REGION.sub(one, text)


def circuits_section() -> list[str]:
    lines = ["## Circuits: every ranking as a circuit (`studies.circuits`)", ""]
    runs = {s: _load(f"circuits_{s}", RECORD) for s in CIRCUIT_GRIDS}
    times = ", ".join(f"{s} {r['wall_time_s']} s" for s, r in runs.items() if r is not None)
    lines += [
        "CPR / CMD on the test split (48 of 96 prompts), counterfactual ablation. Wall time of "
        f"each run: {times or 'none yet'}; full tables and curves in the JSON files.",
        "",
    ]
    return [*lines, *GENERATED["circuits"](), ""]


def suite_readme() -> list[str]:
    """``benchmarks/results/README.md``: the maintained suite's results."""
    notes = _load("notes") or {}
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m benchmarks summary` from the JSON files beside it, which the "
        "maintained suite (`benchmarks/*.py`) writes; each JSON names its machine, versions, "
        "thread count and load. The floor is a hand-written plain Hugging Face "
        "`LlamaForCausalLM` with torch hooks doing the same scaling and loss "
        "(`benchmarks/floor.py`); every ratio is to a floor measured in the same process. "
        "One-off studies and GPU runs are in the record, `benchmarks/studies/results/README.md`.",
        "",
    ]
    if notes.get("headline"):
        lines += ["## Headline", "", *notes["headline"], ""]
    lines += step_section(_load("step"), "Training step (CPU, 2 torch threads)")
    lines += step_section(_load("step_t1"), "Training step (CPU, 1 torch thread)")
    lines += memory_section(_load("memory"))
    lines += scaling_section(_load("scaling"))
    if notes.get("scaling"):
        lines += [notes["scaling"], ""]
    lines += demo_section(_load("demo"))
    if notes.get("changes"):
        lines += ["## What changed in ascale for speed", ""]
        for paragraph in notes["changes"]:
            lines += [paragraph, ""]
    return [*lines, *provenance_section(RESULTS)]


def record_readme() -> list[str]:
    """``benchmarks/studies/results/README.md``: the record of one-off studies and GPU runs."""
    lines = [
        "# The record: one-off studies and GPU runs",
        "",
        "Written by `python -m benchmarks summary` from the JSON files beside it. Each was "
        "measured once, by a script of `benchmarks/studies/` or `benchmarks/gpu/`, on the code of "
        "its commit (Provenance, below): it backs a decision or an issue's acceptance and is not "
        "re-run to check a claim; the maintained suite's results are in "
        "`benchmarks/results/README.md`. Fitted interventions that a study saves beside its JSON "
        "are not committed.",
        "",
    ]
    before = "Before the speed changes (`step --name step_before` at the older commit)"
    lines += step_section(_load("step_before", RECORD), f"{before}: CPU, 2 torch threads")
    lines += step_section(_load("step_before_t1", RECORD), f"{before}: CPU, 1 torch thread")
    lines += peers_section(_load("peers", RECORD))
    lines += compile_section(_load("compile_cpu", RECORD))
    lines += paper_sizes_section(_load("paper_sizes", RECORD))
    lines += localisation_section(_load("localisation_cost", RECORD))
    lines += compare_cost_section(_load("compare_cost", RECORD))
    lines += compare_cost_section(
        _load("compare_cost_ioi", RECORD),
        "## `ascale compare --task ioi`: now against before the first-result work",
    )
    lines += first_result_section({name: _load(name, RECORD) for name in FIRST_RESULT_RUNS})
    lines += circuits_section()
    lines += gpu_section(_load("gpu_step", RECORD))
    lines += gpu_capture_section(_load("gpu_capture", RECORD))
    lines += gpu_profile_section(_load("gpu_profile", RECORD))
    lines += gpu_runs_section(_load("gpu_checks", RECORD), _load("gpu_demo", RECORD))
    return [*lines, *provenance_section(RECORD)]


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    for path, lines in ((RESULTS, suite_readme()), (RECORD, record_readme())):
        (path / "README.md").write_text("\n".join(lines))
        print(f"wrote {path / 'README.md'}")
    for page in GENERATED_PAGES:
        path = common.ROOT / page
        text = path.read_text(encoding="utf-8")
        if (filled := fill_generated(text)) != text:
            path.write_text(filled, encoding="utf-8")
            print(f"rewrote the generated tables of {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

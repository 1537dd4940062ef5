"""The benchmark figure for ``docs/benchmarks.md``: step time against the floor, and its scaling.

Writes ``docs/img/benchmarks.png`` with plotly's static export, which needs ``kaleido`` (1.x) and a
Chromium on the machine: kaleido is not a dependency of ascale, so run this from an environment
that has it, e.g. ``benchmarks/.venv-peers/bin/python -m benchmarks.plot``. Without kaleido it
writes ``docs/img/benchmarks.html`` (plotly.js inline) instead.
"""

from __future__ import annotations

import argparse
import json

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from benchmarks import common
from benchmarks.common import RECORD, RESULTS

DOCS_IMG = common.ROOT / "docs" / "img"


def figure() -> go.Figure:
    step = json.loads((RESULTS / "step_t1.json").read_text())
    scaling = json.loads((RESULTS / "scaling.json").read_text())
    peers_path = RECORD / "peers.json"  # a one-off study: in the record
    peers = json.loads(peers_path.read_text()) if peers_path.is_file() else None
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(
            "training step, batch 32 (ratio to floor)",
            "step time vs batch size",
            "step time vs prompt length",
        ),
        horizontal_spacing=0.09,
    )
    ratios = dict(step["ratio_to_floor"])
    if peers:
        for name in ("nnsight", "pyvene"):
            if name in peers["ratio_to_floor"]:
                ratios[name] = peers["ratio_to_floor"][name]
    names = sorted(ratios, key=ratios.get)
    colours = ["#1f77b4" if n.startswith("ascale") else "#7f7f7f" for n in names]
    fig.add_trace(
        go.Bar(
            x=[ratios[n] for n in names],
            y=names,
            orientation="h",
            marker_color=colours,
            text=[f"{ratios[n]:.2f}x" for n in names],
            textposition="outside",
            showlegend=False,
        ),
        row=1,
        col=1,
    )
    for col, axis, key in ((2, "batch", "batch_prompts"), (3, "length", "n_pos")):
        rows = scaling.get(axis, [])
        for who, colour in (("floor", "#7f7f7f"), ("ascale", "#1f77b4")):
            fig.add_trace(
                go.Scatter(
                    x=[r[key] for r in rows],
                    y=[r[f"{who}_s"] for r in rows],
                    mode="lines+markers",
                    name=who,
                    line_color=colour,
                    showlegend=col == 2,
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="x floor (peers: their own run)", range=[0, 1.5], row=1, col=1)
    fig.update_xaxes(title_text="prompts per batch", row=1, col=2)
    fig.update_xaxes(title_text="prompt tokens (batch 32)", row=1, col=3)
    fig.update_yaxes(title_text="seconds per step", row=1, col=2)
    fig.update_layout(
        width=1300,
        height=420,
        template="plotly_white",
        margin={"l": 150, "r": 20, "t": 100, "b": 50},
        title_text=f"SmolLM2-135M on {step['machine']['cpu']}, "
        f"{step['machine']['torch_threads']} torch thread(s)",
    )
    return fig


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    fig = figure()
    try:
        fig.write_image(DOCS_IMG / "benchmarks.png", scale=1.5)
        print(f"wrote {DOCS_IMG / 'benchmarks.png'}")
    except Exception as err:  # no kaleido or no Chromium here: an interactive page instead
        fig.write_html(DOCS_IMG / "benchmarks.html", include_plotlyjs=True)
        print(f"no static export ({type(err).__name__}); wrote {DOCS_IMG / 'benchmarks.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Edge-level circuits on SmolLM2's IOI: every edge ranking in one run, in yardstick steps.

Ranks the 123,211 edges of MIB's graph with EAP, EAP-IG-inputs (5 steps) and edge circuit
scalars (started in EAP-IG's order) on a training split, and scores each ranking, with random
orders, as circuits on the held-out split (MIB's protocol, counterfactual ablation: the stages
of `ascale.compare_edges`, run one by one to record each one's time and the process's peak
memory after it). The yardstick (``../shared/tools/floor_step.py``, a plain-PyTorch
scalars step of SmolLM2 on 64 x 12 tokens) is timed before and after in the same run; each
method's time is reported in its steps, with the run's peak memory (RSS).

Run: ``.venv/bin/python -m benchmarks edges [--n 64] [--steps 50]``; writes results/edges_ioi.json
and the MIB files under results/edges_ioi/ (not committed).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path
from typing import Any

from benchmarks import common


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="IOI prompts (half train, half test)")
    parser.add_argument("--steps", type=int, default=50, help="edge circuit scalars' steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--n-random", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="edges_ioi")
    args = parser.parse_args(argv)
    import ascale

    load, before = common.start_timed(args.threads)
    model = ascale.load_model()
    data = ascale.tasks.ioi(model, n=args.n, seed=args.seed)
    corrupted = ascale.tasks.ioi_corrupt(data, model, seed=args.seed)
    train, test = data.split(test_size=0.5, seed=args.seed)
    ctrain, ctest = corrupted.split(test_size=0.5, seed=args.seed)
    timings, peak_gb, own_peak_gb = {}, {}, {}

    def stage(name: str, work: Any) -> Any:
        common.reset_peak_rss()
        t = time.perf_counter()
        out = work()
        timings[name] = round(time.perf_counter() - t, 2)
        # the process's peak resident memory so far, and during this stage alone (the model
        # and what earlier stages keep included)
        peak_gb[name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        own_peak_gb[name] = common.peak_rss_gb()
        return out

    rankings = {"eap": stage("eap", lambda: ascale.eap(model, train, ctrain))}
    rankings["eap_ig"] = stage("eap_ig", lambda: ascale.eap_ig(model, train, ctrain, steps=5))
    options = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed}
    scores, fitted = stage(
        "edge_circuit",
        lambda: ascale.fit_edge_circuit(
            model, train, ctrain, rankings["eap_ig"].scores, progress=False, **options
        ),
    )
    graph = rankings["eap"].graph
    rankings["edge_circuit"] = ascale.EdgeAttributionResult("edge_circuit", graph, scores)
    circuits = stage(
        "circuits",
        lambda: ascale.score_edges(
            model, test, ctest, rankings, n_random=args.n_random, seed=args.seed
        ),
    )
    load.append(os.getloadavg()[0])
    after = common.yardstick(args.threads)
    step = (before + after) / 2
    summary = circuits.summary()
    payload: dict[str, Any] = {
        "task": "ioi",
        "n_train": len(train),
        "n_test": len(test),
        "n_pos": data.n_pos,
        "settings": vars(args),
        "summary": summary.reset_index().to_dict("records"),
        "curves": circuits.curves.to_dict("records"),
        "m_clean": circuits.m_clean,
        "m_ablated": circuits.m_ablated,
        "fit_history_f": fitted.history["f"],
        "fit_settings": fitted.settings,
        "timings_s": timings,
        "yardstick_s": {"before": before, "after": after},
        "timings_in_yardstick_steps": {k: round(v / step, 1) for k, v in timings.items()},
        "peak_rss_gb_after": peak_gb,
        "peak_rss_gb_during": own_peak_gb,
        "load_1min": load,
        "commit": common.commit(),
    }
    common.write_result(args.name, payload)
    folder = Path(common.RESULTS) / args.name
    folder.mkdir(parents=True, exist_ok=True)
    for method, ranking in rankings.items():
        ranking.graph.write_mib_json(folder / f"{method}.json", ranking.scores)
    print(summary.round(3).to_string())
    print(timings, payload["timings_in_yardstick_steps"], peak_gb, own_peak_gb)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

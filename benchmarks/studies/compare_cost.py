"""Wall time of ``ascale compare --task ioi`` now against an earlier commit, on this machine.

The localisation issue asks that ``ascale compare --task ioi`` stay within 1.5x of its time
before the issue's work (its first commit is ``c9e972c``; the commit before it is the default
``--before``). This checks the earlier commit out into a temporary git worktree and runs each
version's command in a fresh process, the earlier one first, then this checkout's, one at a
time (a run is minutes of 2-thread work: interleaving rounds would double the wall time for
little). The earlier version is imported from the worktree by putting it first on
``PYTHONPATH``, with this checkout's virtual environment (the same dependencies). Each run
writes into its own temporary folder; its wall time, the tail of its output and the load are
kept.

Run: ``.venv/bin/python -m benchmarks studies.compare_cost [--before a7f1232]``; writes
``studies/results/compare_cost.json``. About 15 minutes on 2 cores. The first-result issue held the
time to half of main before its work: ``--before 1b012de --name compare_cost_ioi --target
"<= 0.5 (first-result issue)"``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common

# the last commit before the localisation issue's work (c9e972c, "One component grid ...")
BEFORE = "a7f1232"
COMMAND = ["compare", "--task", "ioi"]
TARGET = "<= 1.5 (the localisation issue)"


def run(source: Path, out: Path) -> dict[str, Any]:
    """``ascale compare --task ioi --out OUT`` with the package imported from `source`."""
    code = (
        "import sys, ascale, ascale.cli as cli; "
        "print('ascale from', ascale.__file__, flush=True); "
        "sys.exit(cli.main(sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONPATH": str(source)}
    cmd = [sys.executable, "-c", code, *COMMAND, "--out", str(out)]
    load = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=source, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or str(source) not in lines[0]:
        raise SystemExit(
            f"compare from {source} failed ({proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return {
        "seconds": round(seconds, 1),
        "load_average_1_5_15_at_start": load,
        "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
        "imported_from": lines[0].removeprefix("ascale from "),
        "stdout_tail": lines[-14:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default=BEFORE, help=f"the earlier commit ({BEFORE})")
    parser.add_argument("--wait", action="store_true", help="wait for a quiet machine first")
    parser.add_argument("--name", default="compare_cost")
    parser.add_argument("--target", default=TARGET, help="what the ratio is held to (recorded)")
    args = parser.parse_args(argv)
    load = common.wait_for_quiet() if args.wait else None
    machine = common.machine_info()
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ascale-compare-cost-") as tmp:
        worktree = Path(tmp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(worktree), args.before],
            cwd=common.ROOT,
            check=True,
            capture_output=True,
        )
        try:
            for label, source in (("before", worktree), ("now", common.ROOT)):
                print(f"{label}: ascale {' '.join(COMMAND)} from {source}", flush=True)
                runs[label] = run(source, Path(tmp) / f"out-{label}")
                print(f"{label}: {runs[label]['seconds']} s", flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(worktree)],
                cwd=common.ROOT,
                check=False,
            )
    ratio = runs["now"]["seconds"] / runs["before"]["seconds"]
    result = {
        "benchmark": f"wall time of `ascale {' '.join(COMMAND)}`, fresh process each",
        "machine": machine,
        "load_average_after_wait": load,
        "before": {"commit": common.git("rev-parse", "--short", args.before), **runs["before"]},
        "now": {"commit": common.commit(), **runs["now"]},
        "ratio_now_to_before": round(ratio, 3),
        "target": args.target,
    }
    common.write_result(args.name, result, common.RECORD)
    print(f"before {runs['before']['seconds']} s, now {runs['now']['seconds']} s: x{ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

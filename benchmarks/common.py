"""Shared helpers of the benchmark scripts: machine facts, quiet-machine wait, timing, results.

Every script writes its results through `write_result`: one JSON file holding ``machine`` (CPU
model, cores, threads, load average, versions) beside its numbers, so a result always says where
it came from. The maintained suite writes under ``benchmarks/results/`` (`RESULTS`); one-off
studies and GPU runs under ``benchmarks/studies/results/`` (`RECORD`), the record of what was
measured once. Timings are medians over repeated
rounds; configurations compared with each other run in one process, interleaved round by round,
so background load hits them alike.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: what the maintained suite (``benchmarks/*.py``) writes, re-run to check a claim
RESULTS = Path(__file__).resolve().parent / "results"
#: the record: results of one-off studies (``studies/``) and GPU runs (``gpu/``), each run once
RECORD = RESULTS.parent / "studies" / "results"
ROOT = RESULTS.parent.parent


def git(*args: str) -> str | None:
    """``git <args>`` in the repository (stripped stdout), or None where git or the
    repository is missing."""
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


def commit() -> str | None:
    """The checked-out commit (short hash), ``+dirty`` when tracked files differ from it."""
    head = git("rev-parse", "--short", "HEAD")
    if head is None:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{head}+dirty" if dirty else head


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version(package: str) -> str | None:
    """An installed distribution's version, or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Where and with what a benchmark ran."""
    import torch

    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "commit": commit(),
        "versions": {
            p: version(p)
            for p in ("torch", "transformer-lens", "transformers", "ascale", "nnsight", "pyvene")
            if version(p) is not None
        },
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def wait_for_quiet(max_load: float = 1.5, timeout_s: float = 600, poll_s: float = 60) -> float:
    """Wait until the 1-minute load average drops below `max_load` (or `timeout_s` passes).

    Returns the load average at the end of the wait; the result file records it either way.
    """
    deadline = time.monotonic() + timeout_s
    load = os.getloadavg()[0]
    while load >= max_load and time.monotonic() < deadline:
        print(f"load average {load:.2f} >= {max_load}: waiting {poll_s:.0f} s", flush=True)
        time.sleep(poll_s)
        load = os.getloadavg()[0]
    return load


def interleaved(
    runners: dict[str, Callable[[], float]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Call each runner once a round, alternating the order, and collect what each returns.

    A runner returns one measurement (seconds per step, say). The first `warmup` rounds are run
    and dropped. Odd rounds go through the runners backwards, so no runner always follows the
    same one.
    """
    names = list(runners)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            value = runners[name]()
            if r >= warmup:
                out[name].append(value)
        if r >= warmup:
            line = ", ".join(f"{n} {out[n][-1]:.3f}" for n in names)
            print(f"round {r - warmup + 1}/{rounds}: {line}", flush=True)
    return out


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Median, spread and the raw samples."""
    xs = list(samples)
    return {
        "median": statistics.median(xs),
        "min": min(xs),
        "max": max(xs),
        "n": len(xs),
        "samples": [round(x, 5) for x in xs],
    }


def ratios(samples: dict[str, list[float]], floor: str) -> dict[str, float]:
    """Median of each configuration divided by the median of `floor`."""
    base = statistics.median(samples[floor])
    return {n: statistics.median(v) / base for n, v in samples.items()}


def paired_ratios(samples: dict[str, list[float]], floor: str) -> dict[str, float]:
    """Median over rounds of (configuration / floor) within the same round."""
    base = samples[floor]
    return {
        n: statistics.median(a / b for a, b in zip(v, base, strict=True))
        for n, v in samples.items()
    }


def write_result(
    name: str, payload: dict[str, Any], folder: Path | None = None, *, device: str = "cpu"
) -> Path:
    """Write ``{folder}/{name}.json`` (default `RESULTS`, the suite's) and return its path.

    The one writer of every script's results. A payload without a ``machine`` entry gets
    `machine_info` (on `device`) as taken now, at the end of the run, so that no result file
    leaves out where it came from. The file is replaced at once (written beside, then renamed):
    a run cut off mid-write leaves the previous file whole.
    """
    if "machine" not in payload:
        payload = {**payload, "machine": machine_info(device)}
    folder = folder or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"wrote {path}", flush=True)
    return path


CHROMIUM = "/usr/bin/chromium"


def screenshot(figure: Any, target: Path, width: int = 900, height: int = 450) -> Path:
    """Draw a plotly `figure` in headless Chromium (Debian's, the one the report's browser test
    uses) from a page with plotly.js inlined, and save the PNG: no network, no kaleido."""
    width = int(figure.layout.width or width)
    height = int(figure.layout.height or height)
    figure = figure.update_layout(width=width, height=height)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ascale-png-") as tmp:
        page = Path(tmp) / "figure.html"
        figure.write_html(page, include_plotlyjs=True, full_html=True, config={"staticPlot": True})
        page.write_text(
            page.read_text().replace("<head>", "<head><style>body{margin:0}</style>", 1)
        )
        subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={tmp}/profile",
                f"--window-size={width},{height}",
                "--virtual-time-budget=10000",
                f"--screenshot={target}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return target


YARDSTICK = ROOT.parent / "shared" / "tools" / "floor_step.py"


def yardstick(threads: int) -> float:
    """Seconds of one yardstick step (``../shared/tools/floor_step.py``, its median), timed in a
    fresh process: report times in its steps so that a figure holds across machines."""
    env = {**os.environ, "FLOOR_THREADS": str(threads)}
    out = subprocess.run(
        [sys.executable, str(YARDSTICK)], capture_output=True, text=True, env=env, check=True
    )
    return float(out.stdout.strip().splitlines()[-1].split()[0])


def reset_peak_rss() -> None:
    """Start the process's peak resident memory (``VmHWM``) again from its current size (Linux:
    ``/proc/self/clear_refs``), so that `peak_rss_gb` measures the work after it alone."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_gb() -> float | None:
    """The process's peak resident memory since `reset_peak_rss` (GB; ``None`` off Linux)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0)
    return round(kb / 2**20, 2)


def start_timed(threads: int) -> tuple[list[float], float]:
    """A timed run's start: torch at `threads` threads, the load now (a list to append the
    later loads to) and one yardstick step's seconds, timed before any work."""
    import torch

    torch.set_num_threads(threads)
    return [os.getloadavg()[0]], yardstick(threads)

"""The HTML report in a real browser: every figure draws, the console stays clean, no network.

`write_report` output from a tiny random GPT-2 is opened in Debian's headless Chromium
(``make browser`` installs it; ``make test`` depends on that). Chromium is driven over the
DevTools protocol on a pipe (``--remote-debugging-pipe``: NUL-separated JSON messages on file
descriptors 3 and 4), so the test needs nothing beyond the standard library. A second test shows
that the checker fails on a page with a broken figure and a script from the network.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import select
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

import ascale
from ascale.testing import ioi_like_rows

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--proxy-server=127.0.0.1:9",  # a request that does escape fails at once instead of hanging
)  # fmt: skip
FIGURE_DIV = re.compile(r"<div[^>]*\bclass=\"plotly-graph-div\"")

# Resolves once every figure div holds a rendered plotly root, or nothing has changed for `quiet`
# ms after the load event (a figure that failed never draws); returns one record per figure.
SETTLE = """
new Promise(resolve => {
  const quiet = %d, start = performance.now();
  let last = -1, since = start;
  const figures = () => [...document.querySelectorAll(".plotly-graph-div")].map(d => ({
    id: d.id, drawn: d.classList.contains("js-plotly-plot") && !!d._fullLayout,
    svgs: d.querySelectorAll("svg.main-svg").length,
    traces: (d.data || []).length, calc: (d.calcdata || []).length}));
  const poll = () => {
    const now = figures(), done = now.filter(f => f.drawn && f.svgs > 0).length;
    if (done !== last) { last = done; since = performance.now(); }
    const loaded = document.readyState === "complete";
    if (loaded && (done === now.length || performance.now() - since > quiet))
      requestAnimationFrame(() => requestAnimationFrame(() => resolve(JSON.stringify(figures()))));
    else setTimeout(poll, 50);
  };
  poll();
})
"""


class Chromium:
    """Headless Chromium on a DevTools pipe: `call` a method, read the `events` it sent."""

    def __init__(self, *, timeout: float = 60.0) -> None:
        if not CHROMIUM.is_file():
            pytest.fail(f"{CHROMIUM} is missing: run `make browser` (`make test` installs it)")
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._buffer, self._next_id = b"", 0

    def __enter__(self) -> Chromium:
        self._profile = tempfile.TemporaryDirectory(prefix="ascale-chromium-")
        self._log = Path(self._profile.name) / "stderr.log"
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()
        # bash maps our pipe ends onto 3 and 4 (copied above 9 first, so they cannot collide)
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome, from_chrome)]
        for fd in (to_chrome, from_chrome):
            os.close(fd)
        args = [*FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}",
                "about:blank"]  # fmt: skip
        with open(self._log, "wb") as log:  # the child keeps its own copy
            self._process = subprocess.Popen(
                ["bash", "-c", 'exec "$0" "$@" 3<&{} 4>&{} {}<&- {}>&-'.format(*ends, *ends),
                 str(CHROMIUM), *args],
                pass_fds=ends,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # its own process group, so `__exit__` can end all of it
            )  # fmt: skip
        for fd in ends:
            os.close(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call("Browser.close")
            self._process.wait(timeout=10)
        except (OSError, TimeoutError, subprocess.TimeoutExpired, RuntimeError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        finally:
            os.close(self._write)
            os.close(self._read)
            self._profile.cleanup()

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._write, data) :]
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        """Block until an event named `method` has arrived (it may have already)."""
        while not any(e["method"] == method for e in self.events):
            reply = self._receive()
            if "method" in reply:
                self.events.append(reply)
        return next(e for e in self.events if e["method"] == method)

    def _receive(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError(f"Chromium sent nothing for {self.timeout} s")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                log = self._log.read_text(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"Chromium exited ({self._process.poll()}): {log}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(message))


@dataclass
class PageCheck:
    """What a page did in the browser; `problems` lists whatever is wrong (empty: all good)."""

    url: str
    n_figures: int
    figures: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    screenshot: bytes = b""

    @property
    def problems(self) -> list[str]:
        drawn = [f for f in self.figures if f["drawn"] and f["svgs"] > 0]
        found = []
        if len(drawn) != self.n_figures or len(self.figures) != self.n_figures:
            missing = [f["id"] for f in self.figures if f not in drawn]
            found.append(
                f"{len(drawn)} of {self.n_figures} figures drew (HTML has {self.n_figures} figure "
                f"divs, the page {len(self.figures)}); not drawn: {missing}"
            )
        found += [f"console: {e}" for e in self.errors]
        found += [f"network request: {u}" for u in self.requests]
        return found


def check_page(
    path: Path,
    *,
    screenshot: bool = False,
    size: tuple[int, int] = (1280, 900),
    quiet_ms: int = 1500,
) -> PageCheck:
    """Open `path` in headless Chromium, wait for its scripts, and record what happened.

    Errors are console messages of level error, uncaught exceptions and browser log errors;
    requests are every URL the page asked for except itself (``data:`` and ``blob:`` URLs are
    inline, not network). With `screenshot`, the PNG of the first `size` pixels of the page is
    kept. A figure that never draws costs `quiet_ms` of waiting.
    """
    url = path.resolve().as_uri()
    with Chromium() as browser:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            browser.call(f"{domain}.enable", session)
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=size[0],
            height=size[1],
            deviceScaleFactor=1,
            mobile=False,
        )
        browser.call("Page.navigate", session, url=url)
        browser.wait_for("Page.loadEventFired")
        settled = browser.call(
            "Runtime.evaluate", session, expression=SETTLE % quiet_ms, awaitPromise=True
        )
        if "exceptionDetails" in settled:
            raise RuntimeError(f"waiting for the figures failed: {settled['exceptionDetails']}")
        image = b""
        if screenshot:
            shot = browser.call("Page.captureScreenshot", session, format="png")
            image = base64.b64decode(shot["data"])
        events = [e for e in browser.events if e.get("sessionId") == session]
    html = path.read_text(encoding="utf-8")
    return PageCheck(
        url=url,
        n_figures=len(FIGURE_DIV.findall(html)),
        figures=json.loads(settled["result"]["value"]),
        errors=[m for e in events if (m := _error(e))],
        requests=[
            u
            for e in events
            if e["method"] == "Network.requestWillBeSent"
            and (u := e["params"]["request"]["url"]) != url
            and not u.startswith(("data:", "blob:"))
        ],
        screenshot=image,
    )


def _error(event: dict[str, Any]) -> str:
    """The text of an error-level console, exception or log event; '' for anything else."""
    method, params = event["method"], event.get("params", {})
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return str(details.get("exception", {}).get("description") or details["text"])
    if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
        return " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
    if method == "Log.entryAdded" and params["entry"]["level"] == "error":
        entry = params["entry"]
        return f"{entry['text']} ({entry.get('url', '')})"
    return ""


def tiny_report(model: Any, out: Path) -> Path:
    """A report with every section (metrics, maps, top components, cumulative effect,
    agreement with rank scatter plots) from scalars fitted for 2 steps and activation patching."""
    torch.manual_seed(0)
    clean_rows, corrupt_rows = ioi_like_rows(6)
    clean = ascale.ContrastSet.from_rows(clean_rows, model)
    corrupted = ascale.ContrastSet.from_rows(corrupt_rows, model)
    scalars = ascale.ActivationScalars(model, sites=["attn_out", "mlp_out", "heads"])
    ascale.fit(model, scalars, clean, steps=2, stop="none", progress=False)
    ranking = ascale.rank_components(scalars, model=model, data=clean)
    patched = ascale.activation_patching(model, clean, corrupted, like=scalars)
    return ascale.write_report(
        out,
        [ranking, patched],
        agreement=ascale.agreement([ranking, patched], k=5),
        metrics={"scalars": ascale.evaluate(model, scalars, clean)},
        cumulative=[ascale.cumulative_effect(model, scalars, clean, ks=(1, 5, 20))],
        title="ascale report (tiny random GPT-2)",
        description="Scalars fitted for 2 steps on 6 IOI-like prompts; activation patching "
        "against their ABC corruption.",
        top_k=10,
    )


def test_report_draws_every_figure_offline_without_errors(tiny_gpt2, tmp_path):
    page = check_page(tiny_report(tiny_gpt2, tmp_path))
    # 2 rankings x 3 site maps, 2 top-component bars, cumulative, agreement, 1 rank scatter
    assert page.n_figures == 2 * 3 + 2 + 1 + 1 + 1, page.n_figures
    assert page.problems == [], "\n".join(page.problems)
    assert all(f["calc"] == f["traces"] > 0 for f in page.figures), page.figures


BROKEN = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<script src="https://cdn.plot.ly/plotly-2.35.2.min.js"></script>
{good}
<div id="broken" class="plotly-graph-div" style="height:300px; width:100%;"></div>
<script>Plotly.newPlot("broken", [{{"type": "heatmap", "z": [[1, 2], [3 </script>
</body></html>
"""


def test_checker_reports_a_broken_figure_and_a_network_request(tmp_path):
    import plotly.graph_objects as go

    from ascale.report import figure_html

    good = figure_html(go.Figure(go.Bar(x=[1, 2], y=[3, 4])), include_plotlyjs=True)
    path = tmp_path / "broken.html"
    path.write_text(BROKEN.format(good=good), encoding="utf-8")
    page = check_page(path, quiet_ms=500)
    assert page.n_figures == 2 and len(page.figures) == 2
    assert sum(f["drawn"] for f in page.figures) == 1, page.figures  # the good one drew
    problems = "\n".join(page.problems)
    assert "1 of 2 figures drew" in problems and "'broken'" in problems, problems
    assert "SyntaxError" in problems, problems
    assert "network request: https://cdn.plot.ly/plotly-2.35.2.min.js" in problems, problems

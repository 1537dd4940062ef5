"""``docs/img/report.png``: the HTML report of a tiny random GPT-2 as headless Chromium draws it.

Run by ``make screenshot`` (which installs Debian's Chromium if it is missing). The report and the
browser are the browser test's (`tests/test_report_browser.py`): scalars fitted for 2 steps on 6
IOI-like prompts and activation patching, opened in Chromium over the DevTools pipe. The page is
checked first (every figure drew, no console errors, no network); a page with a problem gets no
screenshot. The image is the top of the page: title, metrics and the first scaling maps.

    .venv/bin/python -m benchmarks studies.report_screenshot
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks import common

ROOT = common.ROOT
OUT = ROOT / "docs" / "img" / "report.png"
SIZE = (1280, 1500)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))  # the test helpers: the tiny model, report, browser
    from test_report_browser import check_page, tiny_report

    from ascale.loading import load_model
    from ascale.testing import build_tiny

    with tempfile.TemporaryDirectory(prefix="ascale-screenshot-") as tmp:
        model = load_model(build_tiny("gpt2", Path(tmp) / "tiny-gpt2"))
        page = check_page(tiny_report(model, Path(tmp) / "report"), screenshot=True, size=SIZE)
    if page.problems:
        print(
            "the report has problems; no screenshot:", *page.problems, sep="\n  ", file=sys.stderr
        )
        return 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(page.screenshot)
    print(f"wrote {OUT.relative_to(ROOT)} ({SIZE[0]}x{SIZE[1]}, {page.n_figures} figures drew)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

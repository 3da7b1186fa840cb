# synth-pipeline: `make demo` runs one synthetic release end to end, `make test` runs the tests
# (all but those marked `slow`: <= 10 min on a 2-core machine), `make test-all` all of them (CI).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first: the pinned CPU wheel; an unpinned torch would pull a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c requirements/constraints.txt -e ".[airflow,test]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/synth-pipeline demo

test: install
	$(PY) -m pytest tests -m "not slow"

test-all: install
	$(PY) -m pytest tests

bench: install
	$(PY) benchmarks/bench_synthesizer.py
	$(PY) benchmarks/bench_audit.py
	$(PY) benchmarks/bench_scaling.py
	$(PY) benchmarks/bench_peers.py

lint: install
	$(VENV)/bin/ruff check synth_pipeline operators dags tests benchmarks

clean:
	rm -rf $(VENV) .demo build *.egg-info

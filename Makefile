# Two commands on a fresh clone: `make demo` (main job on embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch / torchvision are pinned in pyproject.toml to the builds on the project's machines.
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mgtc demo

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 -m "not integration"

bench: $(STAMP)
	$(BIN)/mgtc bench

# On a GPU machine: the GPU path's checks and speeds (<= 8 min on one H100/H200), table into docs/BENCHMARKS.md.
gpu-check: $(STAMP)
	$(BIN)/mgtc bench gpu

clean:
	rm -rf runs .pytest_cache

# `make run` and `make test` each set up .venv first when it is missing or older than
# pyproject.toml, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build by default (on this project's machines it is a local file); a user with a GPU
# can run e.g. `make TORCH=torch test` to take the build pip picks for their platform.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: run test check docs bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,dask,docs]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/study exercises

# The gates first (seconds), then the suite.
test: check
	$(BIN)/python -m pytest -q

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) docs

# The site, warnings as errors (mkdocs.yml: strict); the figures and CHANGELOG.md are the
# committed ones, copied in.
docs: $(STAMP)
	mkdir -p docs/figures
	cp figures/*.png docs/figures/
	cp CHANGELOG.md docs/changelog.md
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_engines.py
	$(BIN)/python benchmarks/bench_peers.py
	$(BIN)/python benchmarks/bench_store.py parquet
	$(BIN)/python benchmarks/bench_store.py grow
	$(BIN)/python benchmarks/bench_store.py assemble
	$(BIN)/python benchmarks/bench_balance.py 100k

clean:
	rm -rf $(VENV) build *.egg-info site docs/figures docs/changelog.md

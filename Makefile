# make repro: run the pipeline; make test: run the tests. Both set up .venv first when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help deps repro test lint format bench search clean-venv

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

deps: $(STAMP)  ## create or refresh .venv from the pinned requirements; install graphviz, chromium, chromium-driver if missing
	@./scripts/install-system-deps.sh graphviz chromium chromium-driver

repro: deps  ## run the pipeline (dvc repro); offline, set MOVIELENS_MIRROR to a local copy
	$(BIN)/dvc repro

test: deps  ## run the whole test suite
	$(BIN)/python -m pytest

lint: deps  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: deps  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean-venv:  ## remove .venv
	rm -rf $(VENV)

.PHONY: plots
plots: deps  ## dvc plots show into plots/ offline, checked in headless chromium, with a screenshot
	$(BIN)/python scripts/plots_page.py --out plots --screenshot plots/screenshot.png

bench: deps  ## training vs Surprise, top-N vs EASE/ALS/popularity on the pipeline's split; recommend's start-up
	$(BIN)/dvc repro preprocess
	$(BIN)/python -m benchmarks.bench_train
	$(BIN)/dvc repro evaluate
	$(BIN)/python -m benchmarks.bench_topn
	$(BIN)/python -m benchmarks.bench_recommend
	$(BIN)/python -m benchmarks.bench_foldin

search: deps  ## grid search over train params, then the watch model and like_weight, on the validation part only
	$(BIN)/dvc repro preprocess
	$(BIN)/python -m benchmarks.search
	$(BIN)/python -m benchmarks.bench_topn --search

.PHONY: bench-scale
bench-scale: deps  ## whole pipeline on 25M generated ml-25m-layout ratings: time, memory per stage
	$(BIN)/python -m benchmarks.bench_scale

.PHONY: bench-serve
bench-serve: deps  ## movielens serve under load on 127.0.0.1: requests/s, p50/p99 per endpoint, during reloads
	$(BIN)/python -m benchmarks.bench_serve

# make repro: run the pipeline; make test: run the tests. Both set up .venv first when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
SPARK_STAMP := $(VENV)/.installed-spark
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help deps dev-deps spark repro test lint format bench search clean-venv

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# Tests, lint and benchmarks also need the dev tools and the Spark engine (pyspark); make repro does not.
$(DEV_STAMP): $(STAMP) requirements-dev.txt requirements-spark.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	@touch $@

$(SPARK_STAMP): $(STAMP) requirements-spark.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-spark.txt -c constraints.txt
	@touch $@

deps: $(STAMP)  ## create or refresh .venv from the pinned requirements; install graphviz if missing
	@./scripts/install-system-deps.sh graphviz

dev-deps: deps $(DEV_STAMP)  ## deps, plus the test tools, pyspark, chromium, chromium-driver and Java 17
	@./scripts/install-system-deps.sh chromium chromium-driver openjdk-17-jre-headless

spark: deps $(SPARK_STAMP)  ## what compute.engine=spark needs: pyspark and Java 17
	@./scripts/install-system-deps.sh openjdk-17-jre-headless

repro: deps  ## run the pipeline (dvc repro); offline, set MOVIELENS_MIRROR to a local copy
	$(BIN)/dvc repro

test: dev-deps  ## run the whole test suite
	$(BIN)/python -m pytest

lint: dev-deps  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: dev-deps  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean-venv:  ## remove .venv
	rm -rf $(VENV)

.PHONY: plots
plots: dev-deps  ## dvc plots show into plots/ offline, checked in headless chromium, with a screenshot
	$(BIN)/python scripts/plots_page.py --out plots --screenshot plots/screenshot.png

bench: dev-deps  ## training vs Surprise, top-N vs EASE/ALS/popularity on the pipeline's split; recommend's start-up
	$(BIN)/dvc repro preprocess
	$(BIN)/python -m benchmarks.bench_train
	$(BIN)/dvc repro evaluate
	$(BIN)/python -m benchmarks.bench_topn
	$(BIN)/python -m benchmarks.bench_recommend
	$(BIN)/python -m benchmarks.bench_foldin

search: dev-deps  ## grid search over train params, then the watch model and like_weight, on the validation part only
	$(BIN)/dvc repro preprocess
	$(BIN)/python -m benchmarks.search
	$(BIN)/python -m benchmarks.bench_topn --search

.PHONY: bench-scale
# 25 M generated ratings through the pipeline on each engine; 100 M (Parquet parts written block by
# block) preprocessed on Spark in a 4 GB memory cgroup, the pandas engine refused at that cap and
# measured without it. The cap needs root (benchmarks/cgroup.py). Figures: benchmarks/scale*.json.
HUNDRED_M := --ratings 100000000 --parts --taste 0 --until preprocess
bench-scale: dev-deps  ## 25M ratings on pandas and Spark; 100M on Spark in 4 GB, pandas refused there
	$(BIN)/python -m benchmarks.bench_scale --pipeline-only
	$(BIN)/python -m benchmarks.bench_scale --pipeline-only --engine spark --out benchmarks/scale-spark.json
	$(BIN)/python -m benchmarks.bench_scale $(HUNDRED_M) --engine spark --memory-cap 4g --out benchmarks/scale-100m-spark.json
	$(BIN)/python -m benchmarks.bench_scale $(HUNDRED_M) --engine pandas --memory-cap 4g --out benchmarks/scale-100m-pandas-capped.json
	$(BIN)/python -m benchmarks.bench_scale $(HUNDRED_M) --engine pandas --out benchmarks/scale-100m-pandas.json

.PHONY: bench-serve
bench-serve: dev-deps  ## movielens serve under load on 127.0.0.1: requests/s, p50/p99 per endpoint, during reloads
	$(BIN)/python -m benchmarks.bench_serve

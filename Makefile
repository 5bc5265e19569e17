# winback: `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install lock demo test lint format bench bench-accuracy bench-score bench-scale bench-ceiling clean

help: ## list the targets with one line each
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt -e '.[dev,spark,db,fast]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv (if missing) and install winback with Spark, database drivers, compiled trees and dev tools, at the versions in constraints.txt

lock: ## resolve pyproject.toml's ranges afresh in a scratch venv and pin the result in constraints.txt
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[dev,spark,db,fast]'
	{ sed -n '1,3p' constraints.txt; .lock-venv/bin/python -m pip freeze --all --exclude-editable \
	  | grep -v -i -e '^winback' -e '^setuptools=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .lock-venv
	@echo "constraints.txt refreshed: run make test, then commit it"

demo: $(STAMP) ## run the whole pipeline on built-in synthetic demo data (writes ./demo)
	$(BIN)/winback demo --out demo

# The tests run in TEST_WORKERS processes, each test file whole in one of them (its fixtures
# are built once); most tests are single-threaded subprocess runs, so two keep both cores busy.
TEST_WORKERS ?= 2

test: $(STAMP) ## run the whole test suite (TEST_WORKERS=1 for one process)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

format: $(STAMP) ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix src tests benchmarks examples
	$(BIN)/ruff format src tests benchmarks examples

bench: $(STAMP) ## feature, backtest/train and nightly-scoring benchmarks on 1M/10M synthetic orders (medians of 3)
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_iterate.py
	$(BIN)/python benchmarks/bench_score.py

bench-accuracy: $(STAMP) ## backtests on CDNOW and every synthetic scenario: model vs baselines, wall time
	$(BIN)/python benchmarks/bench_accuracy.py

bench-score: $(STAMP) ## the nightly scoring benchmark alone (10M orders, split by stage)
	$(BIN)/python benchmarks/bench_score.py

bench-scale: $(STAMP) ## 50M synthetic orders: load, features and scoring on DuckDB and Spark local[2]
	$(BIN)/python benchmarks/bench_scale.py

bench-ceiling: $(STAMP) ## CDNOW: how far above the baselines any model of the order history gets
	$(BIN)/python benchmarks/cdnow_ceiling.py

clean: ## remove the virtualenv, caches and demo output
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis demo src/*.egg-info

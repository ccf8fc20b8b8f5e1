# healthnav: `make demo` runs the whole platform end to end, `make test` runs the test suite.
# Both bootstrap what they need: a virtualenv in .venv/, Python packages, control-plane binaries.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HNAV := $(VENV)/bin/hnav
export HEALTHNAV_CACHE ?= $(HOME)/.cache/healthnav
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help venv binaries lint test test-unit test-cluster demo bench clean-cluster

help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP) ## Create .venv/ with every extra (torch is large: first time takes minutes)

binaries: ## Build etcd, kube-*, kwok, helm from their Go modules into $(HEALTHNAV_CACHE)
	bash devenv/build-binaries.sh

lint: venv ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: venv binaries lint ## Lint and every test that runs on a CPU machine
	$(VENV)/bin/pytest -m 'not gpu or gpu' $(PYTEST_ARGS)

demo: venv binaries ## The main job: data -> QLoRA -> eval -> Ray Serve -> operator, locally
	$(HNAV) demo

bench: venv binaries ## Benchmarks; JSON results land in bench/results/
	$(PY) -m bench $(BENCH_ARGS)

# healthnav: `make demo` runs the whole platform end to end, `make test` runs the test suite.
# Both bootstrap what they need: a virtualenv in .venv/, Python packages, control-plane binaries.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HNAV := $(VENV)/bin/hnav
export HEALTHNAV_CACHE ?= $(HOME)/.cache/healthnav
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help venv binaries lint test test-gpu demo bench

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

test: venv binaries scan-tools lint ## Lint and every test that runs on a CPU machine
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-gpu: venv ## On a CUDA machine: the gpu-marked tests (QLoRA 4-bit, bf16 scoring, vLLM if installed)
	$(VENV)/bin/pytest -m gpu $(PYTEST_ARGS)

demo: venv binaries ## The main job: data -> QLoRA -> eval -> Ray Serve -> operator, locally
	$(HNAV) demo

bench: venv binaries ## Benchmarks; JSON results land in bench/results/
	$(PY) -m bench $(BENCH_ARGS)

# ---------------------------------------------------------------------------------------------
# Images, chart and the kind quickstart (docs/install.md). Images need a Docker engine.
# ---------------------------------------------------------------------------------------------
REGISTRY ?= ghcr.io/healthnav
TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGES := operator trainer server
HELM ?= $(shell command -v helm 2>/dev/null || echo $(HEALTHNAV_CACHE)/bin/helm-$$(sed -n 's/^HELM_VERSION=//p' devenv/versions.env)/helm)
SCAN_VENV := $(HEALTHNAV_CACHE)/tools/scan

.PHONY: images images-push images-lint helm-lint scan-tools kind-up kind-demo

images: ## Build the operator, trainer and server images as $(REGISTRY)/<name>:$(TAG)
	@for image in $(IMAGES); do \
	  docker build -f images/$$image/Dockerfile -t $(REGISTRY)/$$image:$(TAG) . || exit 1; \
	done

images-push: images ## Push the images to $(REGISTRY) with tag $(TAG)
	@for image in $(IMAGES); do docker push $(REGISTRY)/$$image:$(TAG) || exit 1; done

scan-tools: ## checkov, hadolint, shellcheck in their own virtualenv ($(SCAN_VENV))
	@test -x $(SCAN_VENV)/bin/pip || $(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/pip install -q -r hack/scan-requirements.txt

images-lint: scan-tools ## hadolint the Dockerfiles
	$(SCAN_VENV)/bin/hadolint --config images/.hadolint.yaml images/*/Dockerfile

helm-lint: ## helm lint --strict the chart with every values preset
	@for values in "" values-eks.yaml values-gke.yaml values-kind.yaml; do \
	  $(HELM) lint --strict --kube-version 1.36.0 charts/healthnav $${values:+-f charts/healthnav/$$values} || exit 1; \
	done

kind-up: ## kind cluster + images + KubeRay + MinIO + the chart (needs docker, kind, helm, kubectl)
	TAG=dev bash hack/kind/kind-up.sh

kind-demo: venv ## On the kind cluster: stage a small model and data, fine-tune, serve, query
	bash hack/kind/kind-demo.sh

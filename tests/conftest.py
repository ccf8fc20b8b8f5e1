"""Shared fixtures: the real local control plane and S3 server (see healthnav.devenv)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthnav.devenv.cluster import LocalCluster
from healthnav.devenv.s3 import LocalS3


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _vllm_missing() -> str | None:
    """Why vLLM cannot run here, or None when it imports (its CUDA build, or the CPU build)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed here; `make test-vllm` runs these with its CPU build (.venv-vllm)"
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # e.g. a CUDA build without a GPU, or a torch it was not built for
        return f"vLLM is installed but does not import: {type(exc).__name__}: {exc}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any(item.get_closest_marker("gpu") for item in items) and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine); runs where one exists")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)
    if any(item.get_closest_marker("vllm") for item in items) and (reason := _vllm_missing()):
        for item in items:
            if item.get_closest_marker("vllm"):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct prepared from its package (converted once, cached outside the repo);
    tests that need a real language model skip, saying why, where the package is not installed."""
    try:
        from healthnav.models.prepare import prepare

        return prepare("smollm2-135m-instruct").path
    except Exception as exc:  # ModelNotAvailable: the package (or gguf) is not installed here
        pytest.skip(f"SmolLM2-135M-Instruct cannot be prepared here: {exc}")


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    """A real S3-protocol server on 127.0.0.1; AWS_* variables point boto3 at it for the session."""
    from healthnav.contracts.storage import reset_clients

    server = LocalS3(f"pytest-{os.getpid()}", tmp_path_factory.mktemp("s3"), tie_to_parent=True).up()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    reset_clients()
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_clients()
    server.down()


@pytest.fixture
def s3_bucket(s3: LocalS3) -> str:
    """A fresh, empty bucket for one test; returns its name."""
    return s3.create_bucket(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) on 127.0.0.1."""
    local = LocalCluster(f"pytest-{os.getpid()}", tmp_path_factory.mktemp("cluster"), tie_to_parent=True)
    local.up()
    yield local
    local.down()

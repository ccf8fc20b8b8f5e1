"""End-to-end fixtures: one local cluster with a real node, the chart-installed operator, S3.

Everything here is real and runs on this machine: a kubelet built from the Kubernetes module
over containerd and runc, the project's own images (``make images``) loaded into the node,
pod networking through the CNI bridge plugin, CoreDNS, kube-proxy, KubeRay's operator built from
its Go module, and an S3-protocol server the pods reach on the node's bridge address. Only the
GPU nodes are simulated (kwok), because no GPU exists here; what these tests run asks for none.

The package's cluster is started on first use (after ``test_node_lifecycle.py``, which starts
and stops its own, since one real node runs per machine) and stopped when the last e2e test has
run, with a check that it left nothing behind. It is package-scoped, not session-scoped, so its
S3 environment (AWS_* pointing at the node's S3 server) ends with the package: the tests after it
talk to their own S3 server again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from healthnav.devenv.cluster import LocalCluster
from healthnav.devenv.network import NODE_IP
from healthnav.devenv.node import missing_prerequisites
from healthnav.devenv.s3 import LocalS3

from .e2e_helpers import E2E, NAMESPACE

MODELS_BUCKET = "models"
DATA_BUCKET = "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the e2e tests, visibly and with the fix, where this host cannot run a real node."""
    problems = missing_prerequisites()
    if not problems:
        return
    skip = pytest.mark.skip(reason="no real node on this host: " + "; ".join(problems))
    for item in items:
        if item.get_closest_marker("e2e"):
            item.add_marker(skip)


@pytest.fixture(scope="package")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    """The real-node cluster, S3 on the node's bridge address, and the buckets the tests use."""
    from healthnav.contracts.storage import reset_clients

    cluster = LocalCluster(
        f"e2e-{os.getpid()}", tmp_path_factory.mktemp("e2e-cluster"), tie_to_parent=True, real_node=True
    )
    cluster.up(timeout=600)
    s3 = LocalS3(f"e2e-{os.getpid()}", tmp_path_factory.mktemp("e2e-s3"), tie_to_parent=True, host=NODE_IP)
    s3.up()
    saved = {k: os.environ.get(k) for k in s3.env}
    os.environ.update(s3.env)
    reset_clients()
    for bucket in (MODELS_BUCKET, DATA_BUCKET):
        s3.create_bucket(bucket)
    env = E2E(cluster, s3)
    try:
        yield env
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        reset_clients()
        s3.down()
        cluster.down()
        leftovers = cluster.node.leftovers()
        assert not leftovers, f"the real node left things behind: {leftovers}"


@pytest.fixture(scope="package")
def operator_release(e2e: E2E) -> dict[str, Any]:
    """``helm install`` of charts/healthnav with values-local.yaml: the operator as a pod."""
    from healthnav.devenv.chart import Release, install_operator

    return install_operator(e2e.cluster, e2e.s3, Release(watch_namespace=NAMESPACE))

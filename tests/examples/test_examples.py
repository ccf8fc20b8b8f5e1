"""Every manifest in examples/ is accepted by a real API server with healthnav's CRDs installed.

Examples are what users copy first; one that the API server rejects (a renamed field, a value
outside a CEL rule) is a broken front door. Server-side dry run validates against the exact
OpenAPI + CEL schema the chart installs, without creating anything.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from healthnav.devenv.cluster import LocalCluster, kubectl_path

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "charts" / "healthnav" / "crds"
MANIFESTS = sorted(
    p
    for p in (REPO / "examples").rglob("*.yaml")
    if any(
        doc and doc.get("apiVersion", "").startswith("healthnav.io/")
        for doc in yaml.safe_load_all(p.read_text())
    )
)


def _kubectl(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl_path(), "--kubeconfig", str(cluster.kubeconfig), *args], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def crds_installed(cluster: LocalCluster) -> LocalCluster:
    assert _kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CRDS)).returncode == 0
    _kubectl(cluster, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    for ns in ("healthnav",):
        _kubectl(cluster, "create", "namespace", ns)
    return cluster


def test_examples_exist_for_every_platform() -> None:
    names = {p.relative_to(REPO / "examples").as_posix() for p in MANIFESTS}
    for expected in ("finetunejob.yaml", "modelserve.yaml", "eks/finetunejob.yaml", "gke/modelserve.yaml"):
        assert expected in names
    assert any(n.startswith("kind/") for n in names)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.relative_to(REPO / "examples").as_posix())
def test_example_is_valid_against_the_api_server(crds_installed: LocalCluster, manifest: Path) -> None:
    result = _kubectl(crds_installed, "apply", "--dry-run=server", "-f", str(manifest))
    assert result.returncode == 0, f"{manifest.name}: {result.stderr}"

"""KubeRay's CRDs (RayService, RayCluster) for the local control plane, from KubeRay's Go module.

The ModelServe operator writes ``ray.io/v1`` RayServices; the tests want the API server to
validate them against KubeRay's real schema and to serve RayService's status subresource, so
the CRDs come from the source of truth: ``config/crd/bases/`` of the Go module
``github.com/ray-project/kuberay/ray-operator`` at ``KUBERAY_VERSION`` (``versions.env``),
fetched with ``go mod download -json`` (checksummed by the Go module proxy and sum database)
and copied into ``$HEALTHNAV_CACHE/kuberay-<version>/``. Nothing lands in the repository.

With a real node (``hnav dev cluster up --real-node``) KubeRay's operator itself runs: the
``ray-operator`` binary built from the same module (``build-binaries.sh kuberay``), outside the
cluster, as the user ``kuberay-operator`` bound to the ClusterRole from the module's
``config/rbac/role.yaml``. It reaches each Ray head's dashboard through the API server's Service
proxy (``--use-kubernetes-proxy``), so it needs no cluster DNS. Without a real node, tests play
KubeRay's part by patching the RayService status subresource.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from healthnav.devenv.binaries import MissingToolchainError, cache_dir, versions

MODULE = "github.com/ray-project/kuberay/ray-operator"
# All three: the ray-operator starts its RayJob controller too and exits when that kind's cache
# cannot sync (found on the real node: it served for two minutes, then stopped).
CRD_FILES = ("ray.io_rayservices.yaml", "ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml")
CRD_DIR_IN_MODULE = Path("config/crd/bases")
ROLE_IN_MODULE = Path("config/rbac/role.yaml")
ROLE_FILE = "kuberay-operator-role.yaml"


def kuberay_version() -> str:
    return versions()["KUBERAY_VERSION"]


def crd_cache_dir(version: str | None = None) -> Path:
    return cache_dir() / f"kuberay-{version or kuberay_version()}"


def ensure_crds(version: str | None = None) -> dict[str, Path]:
    """Paths of KubeRay's CRDs (RayService, RayCluster, RayJob), downloading the module when not cached."""
    version = version or kuberay_version()
    out = crd_cache_dir(version)
    paths = {name: out / name for name in CRD_FILES}
    if all(p.is_file() for p in paths.values()) and (out / ROLE_FILE).is_file():
        return paths
    if shutil.which("go") is None:
        raise MissingToolchainError(
            f"Go is needed to fetch KubeRay's CRDs ({MODULE}@{version}); install it from https://go.dev/dl"
        )
    with tempfile.TemporaryDirectory() as work:
        # `go mod download` needs a module context; an empty one fetches into GOMODCACHE only.
        subprocess.run(
            ["go", "mod", "init", "healthnav.local/kuberay"], cwd=work, check=True, capture_output=True
        )
        done = subprocess.run(
            ["go", "mod", "download", "-json", f"{MODULE}@{version}"],
            cwd=work,
            check=False,
            capture_output=True,
            text=True,
            timeout=600,
        )
    info: dict[str, Any] = json.loads(done.stdout or "{}")
    if done.returncode != 0 or "Dir" not in info:
        raise RuntimeError(
            f"go mod download {MODULE}@{version} failed: {info.get('Error') or done.stderr[-500:]}"
        )
    module = Path(info["Dir"])
    out.mkdir(parents=True, exist_ok=True)
    for source, path in [
        *((module / CRD_DIR_IN_MODULE / name, path) for name, path in paths.items()),
        (module / ROLE_IN_MODULE, out / ROLE_FILE),
    ]:
        tmp = path.with_suffix(".tmp")
        shutil.copyfile(source, tmp)
        tmp.chmod(0o644)  # the module cache is read-only
        tmp.replace(path)
    return paths


def install_crds(api_client: Any, version: str | None = None, timeout: float = 60.0) -> list[str]:
    """Create (or replace) KubeRay's CRDs in the cluster behind ``api_client``; wait until served.

    ``create``/``replace`` rather than client-side apply: the RayCluster CRD is larger than the
    last-applied-configuration annotation allows (KubeRay's own docs say the same).
    """
    from healthnav.operator.kube import Kube, KubeError

    kube = Kube(api_client, max_workers=2)
    base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    names = []
    try:
        for path in ensure_crds(version).values():
            crd = yaml.safe_load(path.read_text())
            name = crd["metadata"]["name"]
            names.append(name)
            try:
                kube.request("POST", base, body=crd)
            except KubeError as exc:
                if not exc.is_already_exists:
                    raise
                current = kube.request("GET", f"{base}/{name}")
                crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                kube.request("PUT", f"{base}/{name}", body=crd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if {"rayservices", "rayclusters", "rayjobs"} <= _served(kube):
                return names
            time.sleep(0.25)
        raise TimeoutError(f"KubeRay CRDs not served within {timeout} s")
    finally:
        kube.close()


def install_rbac(api_client: Any, user: str, version: str | None = None) -> None:
    """KubeRay's own ClusterRole (from its module), bound to ``user``: the operator's least privilege."""
    from healthnav.operator.kube import Kube

    ensure_crds(version)
    role = next(
        doc
        for doc in yaml.safe_load_all((crd_cache_dir(version) / ROLE_FILE).read_text())
        if doc and doc.get("kind") == "ClusterRole"
    )
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": role["metadata"]["name"]},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role["metadata"]["name"],
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    kube = Kube(api_client, max_workers=2)
    try:
        for body in (role, binding):
            kube.create_or_get(body)
    finally:
        kube.close()


def operator_args(metrics_port: int, health_port: int) -> list[str]:
    """The ray-operator's command line for a run outside the cluster (KUBECONFIG from the env)."""
    from healthnav.devenv.binaries import binary_path

    return [
        str(binary_path("ray-operator")),
        # One operator, outside the cluster: no Lease to elect it (and no namespace to hold one).
        "--enable-leader-election=false",
        # Ray's dashboard through the API server's Service proxy: no cluster DNS needed.
        "--use-kubernetes-proxy",
        f"--metrics-addr=127.0.0.1:{metrics_port}",
        f"--health-probe-bind-address=127.0.0.1:{health_port}",
        "--log-stdout-encoder=console",
    ]


def uninstall_crds(api_client: Any, timeout: float = 60.0) -> None:
    """Delete KubeRay's CRDs (tests of the not-installed path) and wait until the API is gone."""
    from healthnav.operator.kube import Kube

    kube = Kube(api_client, max_workers=2)
    try:
        for name in ("rayservices.ray.io", "rayclusters.ray.io", "rayjobs.ray.io"):
            kube.delete("apiextensions.k8s.io/v1", "customresourcedefinitions", None, name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _served(kube):
            time.sleep(0.25)
    finally:
        kube.close()


def _served(kube: Any) -> set[str]:
    """Resource names the API server serves under ray.io/v1 (empty when the group is absent)."""
    from healthnav.operator.kube import KubeError

    try:
        doc = kube.request("GET", "/apis/ray.io/v1")
    except KubeError as exc:
        if exc.status == 404:
            return set()
        raise
    return {r.get("name") for r in doc.get("resources") or []}


def main() -> None:
    """``python -m healthnav.devenv.kuberay``: print the cached CRD paths (fetching if needed)."""
    for path in ensure_crds().values():
        print(path)


if __name__ == "__main__":
    main()

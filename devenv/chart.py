"""Install the healthnav chart on the local cluster, as a platform team installs it on EKS or GKE.

``helm upgrade --install`` of ``charts/healthnav`` with ``values-local.yaml`` (images from the
local build, never pulled; the operator pod on the real node) and the S3 endpoint of the local
server, which listens on the node's bridge address so the operator and training pods reach it.
The demo and the end-to-end tests both install through :func:`install_operator`.
"""

from __future__ import annotations

import base64
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthnav.devenv.binaries import ensure_binaries
from healthnav.devenv.cluster import LocalCluster, kubectl_path
from healthnav.devenv.errors import DevenvError
from healthnav.devenv.s3 import LocalS3

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "healthnav"
LOCAL_VALUES = CHART / "values-local.yaml"
OPERATOR_S3_SECRET = "healthnav-s3"
"""The operator's own S3 keys (values-local.yaml: storage.credentialsSecret)."""
WORKLOAD_S3_SECRET = "s3-creds"
"""S3 keys for FineTuneJobs and ModelServes (their spec's secretRef) in the watched namespace."""


class ChartError(DevenvError):
    """helm or kubectl failed; the message carries their own error text."""


@dataclass(frozen=True)
class Release:
    name: str = "healthnav"
    namespace: str = "healthnav-system"
    watch_namespace: str = "healthnav"


def kubectl(cluster: LocalCluster, *args: str, input_text: str | None = None, timeout: float = 120) -> str:
    proc = subprocess.run(
        [kubectl_path(), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        input=input_text,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise ChartError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def apply(cluster: LocalCluster, *objects: dict[str, Any]) -> None:
    kubectl(
        cluster,
        "apply",
        "-f",
        "-",
        input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
    )


def secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def s3_credentials(s3: LocalS3) -> dict[str, str]:
    """The S3 server's keys as the standard AWS variables (the endpoint goes through the chart)."""
    return {k: v for k, v in s3.env.items() if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


def helm_install_args(release: Release, s3_endpoint: str, kubeconfig: Path) -> list[str]:
    return [
        "upgrade",
        "--install",
        release.name,
        str(CHART),
        "--namespace",
        release.namespace,
        "-f",
        str(LOCAL_VALUES),
        "--set",
        f"storage.s3EndpointUrl={s3_endpoint}",
        "--set-json",
        f"watchNamespaces={json.dumps([release.watch_namespace])}",
        "--wait",
        "--timeout",
        "5m",
        "--kubeconfig",
        str(kubeconfig),
    ]


def install_operator(cluster: LocalCluster, s3: LocalS3, release: Release = Release()) -> dict[str, Any]:
    """Install the chart and wait until the operator pod is Ready; returns that pod."""
    creds = s3_credentials(s3)
    apply(
        cluster,
        *(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            for ns in (release.namespace, release.watch_namespace)
        ),
        secret(OPERATOR_S3_SECRET, release.namespace, creds),
        secret(WORKLOAD_S3_SECRET, release.watch_namespace, creds),
    )
    helm = ensure_binaries(["helm"])["helm"]
    proc = subprocess.run(
        [str(helm), *helm_install_args(release, s3.endpoint, cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    if proc.returncode != 0:
        raise ChartError(f"helm install failed: {proc.stderr.strip() or proc.stdout.strip()}")
    pods = json.loads(
        kubectl(
            cluster,
            "get",
            "pods",
            "-n",
            release.namespace,
            "-l",
            "app.kubernetes.io/name=healthnav",
            "-o",
            "json",
        )
    )["items"]
    if len(pods) != 1:
        raise ChartError(f"expected one operator pod in {release.namespace}, found {len(pods)}")
    return pods[0]

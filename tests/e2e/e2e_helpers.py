"""How the end-to-end tests drive the real-node cluster; the workloads they put on it live in
:mod:`healthnav.devenv.workloads` (shared with ``bench/real_node.py``)."""

from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass
from typing import Any

from healthnav.devenv.cluster import LocalCluster, kubectl_path
from healthnav.devenv.s3 import LocalS3
from healthnav.devenv.workloads import (  # noqa: F401  (re-exported for the tests)
    NAMESPACE,
    REAL_NODE,
    finetunejob,
    modelserve,
    staged_base_model,
    staged_dataset,
)

OPERATOR_NAMESPACE = "healthnav-system"


@dataclass
class E2E:
    """The session's cluster and what the tests need to drive it."""

    cluster: LocalCluster
    s3: LocalS3

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        proc = subprocess.run(
            [kubectl_path(), "--kubeconfig", str(self.cluster.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def apply(self, manifest: dict[str, Any]) -> None:
        subprocess.run(
            [kubectl_path(), "--kubeconfig", str(self.cluster.kubeconfig), "apply", "-f", "-"],
            input=json.dumps(manifest),
            text=True,
            check=True,
            capture_output=True,
        )

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.get("pods", "-n", namespace, "-l", selector)["items"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"

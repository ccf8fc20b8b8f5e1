"""Helpers shared by the cluster tests of the operator's custom resources (FineTuneJob, ModelServe).

Importable as ``kube_helpers`` from any test: ``tests/`` is on sys.path (rootdir conftest).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from healthnav.operator.kube import Kube, KubeError

CRDS = Path(__file__).resolve().parents[1] / "charts/healthnav/crds"
_CRD_API = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def wait_for(
    fn: Callable[[], Any], timeout: float = 60, what: str = "condition", interval: float = 0.25
) -> Any:
    """Poll ``fn`` until it returns something truthy (returned); fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last={last!r}")


def apply_crd(kube: Kube, path: Path) -> dict[str, Any]:
    """Create or replace the CRD in ``path`` and wait until its resource is served and listable.

    Served in discovery is not quite enough: right after a CRD is established a list can
    still 404 for a moment, so both are checked before a test creates objects.
    """
    crd = yaml.safe_load(path.read_text())
    name = crd["metadata"]["name"]
    try:
        kube.request("POST", _CRD_API, body=crd)
    except KubeError as exc:
        if not exc.is_already_exists:
            raise
        current = kube.request("GET", f"{_CRD_API}/{name}")
        crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        kube.request("PUT", f"{_CRD_API}/{name}", body=crd)
    group, version = crd["spec"]["group"], crd["spec"]["versions"][0]["name"]
    plural = crd["spec"]["names"]["plural"]

    def served() -> bool:
        try:
            resources = kube.request("GET", f"/apis/{group}/{version}")["resources"]
            if not any(r["name"] == plural for r in resources):
                return False
            kube.list(f"{group}/{version}", plural, "default")
        except KubeError:
            return False
        return True

    wait_for(served, 30, f"{plural} served")
    return crd


Mutation = Callable[[dict[str, Any]], None]


def set_path(path: str, value: Any) -> Mutation:
    """A mutation setting ``a.b.0.c`` in a manifest (numeric parts index lists)."""

    def apply(m: dict[str, Any]) -> None:
        node: Any = m
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[parts[-1]] = value

    return apply


def delete_path(path: str) -> Mutation:
    """A mutation deleting ``a.b.c`` from a manifest."""

    def apply(m: dict[str, Any]) -> None:
        node: Any = m
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[parts[-1]]

    return apply


def custom_resource(
    api_version: str, kind: str, name: str, namespace: str, spec: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


@dataclass(frozen=True)
class InvalidManifest:
    """A valid manifest broken one way; both the API server and the pydantic model must reject it.

    Subclasses say which valid manifest they start from (:meth:`valid`).
    """

    id: str
    mutate: Mutation
    field: str
    """The field path the API server's error must name (e.g. spec.training.learningRate)."""
    in_spec: bool = True
    """False when only the API server can check it (metadata, unknown top-level fields)."""

    def valid(self, name: str, namespace: str) -> dict[str, Any]:
        raise NotImplementedError

    def build(self, name: str, namespace: str = "default") -> dict[str, Any]:
        m = copy.deepcopy(self.valid(name, namespace))
        self.mutate(m)
        return m

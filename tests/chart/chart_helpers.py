"""Rendering the healthnav chart with the real ``helm`` binary, for the chart tests.

Everything goes through ``helm`` itself (never a re-implementation of its templating), so what
the tests check is exactly what a user's ``helm install`` would create.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "healthnav"
KUBE_VERSION = "1.36.0"

# The value presets users install with; "default" is values.yaml alone.
PRESETS: dict[str, list[Path]] = {
    "default": [],
    "eks": [CHART / "values-eks.yaml"],
    "gke": [CHART / "values-gke.yaml"],
    "kind": [CHART / "values-kind.yaml"],
    "local": [CHART / "values-local.yaml"],
}


def helm_binary() -> str:
    from healthnav.devenv.binaries import ensure_binaries

    return str(ensure_binaries(["helm"])["helm"])


def helm(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run helm; on failure the assertion message carries helm's own error text."""
    proc = subprocess.run([helm_binary(), *args], capture_output=True, text=True, env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc


def set_args(values: dict[str, str] | None) -> list[str]:
    return [arg for key, value in (values or {}).items() for arg in ("--set", f"{key}={value}")]


def values_args(preset: str) -> list[str]:
    return [arg for path in PRESETS[preset] for arg in ("-f", str(path))]


def template_args(
    preset: str = "default",
    release: str = "hn",
    namespace: str = "healthnav-system",
    values: dict[str, str] | None = None,
    include_crds: bool = False,
) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    args += values_args(preset) + set_args(values)
    if include_crds:
        args.append("--include-crds")
    return args


def render(
    preset: str = "default",
    release: str = "hn",
    namespace: str = "healthnav-system",
    values: dict[str, str] | None = None,
    include_crds: bool = False,
) -> list[dict[str, Any]]:
    """The chart's objects, as ``helm template`` renders them (empty documents dropped)."""
    out = helm(*template_args(preset, release, namespace, values, include_crds)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    sts = one(docs, "StatefulSet")
    return next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "operator")


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's literal env values (valueFrom entries are resolved by the kubelet)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def rule_allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None) -> bool:
    """Whether RBAC ``rules`` allow ``verb`` on ``group/resource`` (object ``name``): the
    authorizer's matching, including resourceNames and wildcards."""
    for rule in rules:
        groups, resources, verbs = rule.get("apiGroups", []), rule.get("resources", []), rule.get("verbs", [])
        names = rule.get("resourceNames") or []
        if (
            (group in groups or "*" in groups)
            and (resource in resources or "*" in resources)
            and (verb in verbs or "*" in verbs)
            and (not names or (name is not None and name in names))
        ):
            return True
    return False

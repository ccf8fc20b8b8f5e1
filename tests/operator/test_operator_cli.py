"""When `hnav operator run` turns kopf's namespace/CRD scanning off (the namespace-scoped
install's start-up stall); the end-to-end proof is in tests/chart (the chart's namespace-scoped
RBAC, the operator reconciling within seconds of its start)."""

from __future__ import annotations

import pytest

from healthnav.operator.cli import exact_namespaces, namespace_scanning_needed

pytestmark = pytest.mark.unit


def _never() -> bool:
    raise AssertionError("the API server must not be asked")


def _refused() -> bool:
    return False


def _allowed() -> bool:
    return True


def _unreachable() -> bool:
    raise ConnectionError("connection refused")


def test_exact_names_are_told_from_patterns() -> None:
    assert exact_namespaces(["team-a", "derm2"])
    for patterns in ([], ["team-*"], ["!kube-system"], ["team-a,team-b"], ["Team"], ["team?"]):
        assert not exact_namespaces(patterns), patterns


def test_exact_names_without_permission_to_list_namespaces_do_not_scan() -> None:
    """rbac.scope=namespace: kopf would be refused and retry ~54 s before falling back."""
    assert namespace_scanning_needed(["team-a"], False, _refused) is False
    assert namespace_scanning_needed(["team-a"], False, _unreachable) is False


def test_scanning_stays_where_it_is_needed_or_permitted() -> None:
    # Patterns must be resolved against the namespaces that exist; every namespace: nothing to scan
    # for namespaces, but new CRDs (KubeRay installed later) are still noticed.
    assert namespace_scanning_needed(["team-*"], False, _never) is True
    assert namespace_scanning_needed([], True, _never) is True
    # Cluster-scope RBAC with exact names: scanning is allowed and keeps CRD discovery.
    assert namespace_scanning_needed(["team-a"], False, _allowed) is True

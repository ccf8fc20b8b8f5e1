"""Metadata every object the operator creates carries, for FineTuneJob and ModelServe alike.

One place for the ``app.kubernetes.io/*`` recommended labels and the controller owner
reference, so ``kubectl get -l app.kubernetes.io/managed-by=healthnav-operator`` finds every
child and garbage collection deletes children with their custom resource, whichever kind.
"""

from __future__ import annotations

from typing import Any

MANAGED_BY = "healthnav-operator"
PART_OF = "healthnav"


def recommended_labels(app: str, instance: str, component: str) -> dict[str, str]:
    """Kubernetes' recommended labels: ``app`` is the workload (healthnav-trainer, …)."""
    return {
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def controller_reference(api_version: str, kind: str, owner: dict[str, Any]) -> dict[str, Any]:
    """``owner`` as the controlling owner: garbage collection deletes the child with it."""
    meta = owner["metadata"]
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_metadata(
    owner: dict[str, Any], name: str, labels: dict[str, str], owner_reference: dict[str, Any]
) -> dict[str, Any]:
    """Metadata of a child ``name`` in its owner's namespace (owner references cannot cross one)."""
    return {
        "name": name,
        "namespace": owner["metadata"]["namespace"],
        "labels": labels,
        "ownerReferences": [owner_reference],
    }

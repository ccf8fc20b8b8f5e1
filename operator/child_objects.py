"""What every object the operator creates shares, whichever custom resource owns it.

FineTuneJob's Job and ModelServe's RayService are different kinds built by different modules
(:mod:`~healthnav.operator.finetunejob_manifests`, :mod:`~healthnav.operator.rayservice`), but
their children carry the same metadata, the same pod security and the same placement rules.
One module, so the two kinds cannot drift apart:

* metadata: the ``app.kubernetes.io/*`` recommended labels and the controller owner reference,
  so ``kubectl get -l app.kubernetes.io/managed-by=healthnav-operator`` finds every child and
  garbage collection deletes children with their custom resource;
* security contexts: the "restricted" Pod Security Standard — the same non-root UID
  (``OperatorSettings.run_as_user``), no privilege escalation, no capabilities, the runtime's
  seccomp profile — so a namespace labelled ``pod-security.kubernetes.io/enforce=restricted``
  admits training and Ray pods alike;
* placement: the operator's default node selector, tolerations and affinity merged with the
  resource's own, and ``gpuType`` turned into node-affinity terms over the accelerator labels.
"""

from __future__ import annotations

import copy
from typing import Any

from healthnav.operator.settings import OperatorSettings

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


# --- security contexts ------------------------------------------------------------------------

SECCOMP = {"type": "RuntimeDefault"}


def pod_security_context(settings: OperatorSettings) -> dict[str, Any]:
    """Non-root UID/GID for every container; volumes (fsGroup) writable by it."""
    uid = settings.run_as_user
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": dict(SECCOMP),
    }


def container_security_context(*, read_only_root: bool) -> dict[str, Any]:
    """No escalation, no capabilities; a read-only root where the program writes only to volumes.

    Ray writes its session files under /tmp in the image, so Ray containers keep a writable root.
    """
    ctx: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": dict(SECCOMP),
    }
    if read_only_root:
        ctx["readOnlyRootFilesystem"] = True
    return ctx


# --- placement ---------------------------------------------------------------------------------


def merge_node_selector(default: dict[str, str], spec_selector: dict[str, str]) -> dict[str, str]:
    """Operator defaults, overridden key by key by the FineTuneJob."""
    return {**default, **spec_selector}


def merge_tolerations(
    default: list[dict[str, Any]], spec_tolerations: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Defaults plus the spec's, without exact duplicates (order kept)."""
    out: list[dict[str, Any]] = []
    for tol in [*default, *spec_tolerations]:
        clean = {k: v for k, v in tol.items() if v is not None}
        if clean not in out:
            out.append(clean)
    return out


def merge_affinity(
    spec_affinity: dict[str, Any] | None,
    default_affinity: dict[str, Any] | None,
    gpu_type: str | None,
    gpu_type_labels: list[str],
) -> dict[str, Any] | None:
    """The pod's affinity: the spec's (or the default), AND the gpuType constraint.

    ``gpuType`` matches any of the configured accelerator labels (GKE's or EKS's, …): one node
    selector term per label, ORed. Existing required terms are combined with those by taking
    the cross product, which is how "A and (B or C)" is written in node affinity.
    """
    affinity = copy.deepcopy(spec_affinity if spec_affinity is not None else default_affinity) or {}
    if gpu_type and gpu_type_labels:
        gpu_terms = [
            {"matchExpressions": [{"key": label, "operator": "In", "values": [gpu_type]}]}
            for label in gpu_type_labels
        ]
        node_affinity = affinity.setdefault("nodeAffinity", {})
        required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
        existing = required.get("nodeSelectorTerms") or []
        if existing:
            terms = []
            for term in existing:
                for gpu_term in gpu_terms:
                    combined = copy.deepcopy(term)
                    combined["matchExpressions"] = [
                        *term.get("matchExpressions", []),
                        *gpu_term["matchExpressions"],
                    ]
                    terms.append(combined)
        else:
            terms = gpu_terms
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": terms}
    return affinity or None

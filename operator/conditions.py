"""metav1.Condition-shaped status conditions, shared by every healthnav custom resource.

Conditions are computed, not accumulated: a reconcile derives the full set from what it
observes and :func:`set_condition` merges each into the previous list so that
``lastTransitionTime`` moves only when ``status`` actually changes (what ``kubectl wait``
and dashboards rely on), and an unchanged reconcile produces byte-identical status (so the
operator can skip the write).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field

from healthnav.schema import CamelModel

ConditionStatus = Literal["True", "False", "Unknown"]


def now_rfc3339() -> str:
    """Current time as Kubernetes writes it (second precision, Z suffix)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def conditions_field() -> Any:
    """A status ``conditions`` list, declared as a map keyed by ``type`` (as metav1 does), so
    server-side apply and ``kubectl`` merge conditions by type instead of replacing the list."""
    return Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class Condition(CamelModel):
    """One aspect of the resource's state (the metav1.Condition shape)."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    """Condition type in CamelCase, e.g. Complete, Schedulable, GatePassed."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    """Programmatic identifier (CamelCase) for the last transition."""
    message: str = Field(default="", max_length=32768)
    """Human-readable details about the last transition."""
    last_transition_time: str
    """When status last changed (RFC 3339)."""
    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation the condition was computed from."""


def set_condition(
    conditions: list[dict[str, Any]],
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    *,
    generation: int | None = None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Return ``conditions`` with ``type`` set; keeps lastTransitionTime when status is unchanged."""
    out = [dict(c) for c in conditions]
    for cond in out:
        if cond.get("type") == type:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = now or now_rfc3339()
            cond.update(status=status, reason=reason, message=message[:32768])
            if generation is not None:
                cond["observedGeneration"] = generation
            return out
    new: dict[str, Any] = {
        "type": type,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": now or now_rfc3339(),
    }
    if generation is not None:
        new["observedGeneration"] = generation
    out.append(new)
    return out


def remove_condition(conditions: list[dict[str, Any]], type: str) -> list[dict[str, Any]]:
    return [dict(c) for c in conditions if c.get("type") != type]


def get_condition(conditions: list[dict[str, Any]] | None, type: str) -> dict[str, Any] | None:
    for cond in conditions or []:
        if cond.get("type") == type:
            return cond
    return None


def is_true(conditions: list[dict[str, Any]] | None, type: str) -> bool:
    cond = get_condition(conditions, type)
    return bool(cond and cond.get("status") == "True")

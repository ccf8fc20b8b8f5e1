"""Security contexts of every pod the operator creates: the "restricted" Pod Security Standard.

Training Jobs and Ray pods run as the same non-root UID (``OperatorSettings.run_as_user``), with
no privilege escalation, no capabilities and the runtime's seccomp profile, so a namespace
labelled ``pod-security.kubernetes.io/enforce=restricted`` admits both. One place, so the two
kinds cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from healthnav.operator.settings import OperatorSettings

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

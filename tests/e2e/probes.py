"""What a probe pod on the real node checks from inside its own network namespace.

The probe runs Python in the python base image and prints one JSON object. It dials only the
cluster's own addresses (the API server's ClusterIP, the node's bridge address) and asks the
cluster DNS for a name outside the cluster, which CoreDNS answers NXDOMAIN itself: no probe
ever sends a packet off this machine. The default-route check reads the routing table; it does
not dial anything.
"""

from __future__ import annotations

from typing import Any

PROBE = r"""
import json, socket, sys, urllib.request
out = {}
routes = [l.split() for l in open("/proc/net/route").read().splitlines()[1:]]
out["default_route"] = any(r[1] == "00000000" for r in routes)
out["resolv"] = open("/etc/resolv.conf").read()
out["kubernetes_dns"] = socket.gethostbyname("kubernetes.default.svc.cluster.local")
try:
    socket.gethostbyname("pypi.org")
    out["outside_name"] = "resolved"
except OSError as exc:
    out["outside_name"] = f"not resolved: {exc}"
socket.create_connection((out["kubernetes_dns"], 443), timeout=5).close()
out["apiserver_via_clusterip"] = True
if len(sys.argv) > 1:  # an S3 endpoint on the node's bridge address
    try:
        urllib.request.urlopen(sys.argv[1], timeout=5)
        out["s3_status"] = 200
    except urllib.error.HTTPError as exc:  # moto answers anonymous requests with 403: it answered
        out["s3_status"] = exc.code
print(json.dumps(out))
"""


def probe_pod(name: str, namespace: str, image: str, s3_endpoint: str | None = None) -> dict[str, Any]:
    args = ["-c", PROBE, *([s3_endpoint] if s3_endpoint else [])]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"healthnav.dev/real-node": "true"},
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65534,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3"],
                    "args": args,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }

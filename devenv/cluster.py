"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok, with simulated GPU nodes.

Why real components: the operator's correctness lives in what only an API server does
(OpenAPI + CEL validation, status subresources, watches, owner-reference garbage collection)
and in what the Job controller and scheduler do with the objects it creates. kwok plays the
kubelets: pods on its nodes get IPs, run, and - when a Job owns them - complete, so the real
Job controller marks Jobs Complete or Failed.

Everything binds to 127.0.0.1 on free ports, so concurrent test runs never collide.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from healthnav.devenv import processes
from healthnav.devenv.binaries import cache_dir, ensure_binaries
from healthnav.devenv.pki import create_pki

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

HERE = Path(__file__).resolve().parent
STAGES_FILE = HERE / "kwok-stages.yaml"
NODES_FILE = HERE / "nodes.yaml"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
KWOK_NODE_ANNOTATION = {"kwok.x-k8s.io/node": "fake"}


class ClusterError(RuntimeError):
    """The control plane could not start; the message names the component and its log."""


@dataclass
class ClusterState:
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)


def _kubeconfig(server: str, ca_file: Path, user: str, token: str) -> dict[str, Any]:
    ca = base64.b64encode(ca_file.read_bytes()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "healthnav-local", "cluster": {"server": server, "certificate-authority-data": ca}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "healthnav-local", "context": {"cluster": "healthnav-local", "user": user}}],
        "current-context": "healthnav-local",
    }


def node_manifest(spec: dict[str, Any]) -> dict[str, Any]:
    """A Node object for a simulated node described in nodes.yaml."""
    resources = {"cpu": str(spec["cpu"]), "memory": str(spec["memory"]), "pods": "110"}
    if spec.get("gpus"):
        resources["nvidia.com/gpu"] = str(spec["gpus"])
    labels = {
        "kubernetes.io/hostname": spec["name"],
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        **spec.get("labels", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec["name"], "labels": labels, "annotations": dict(KWOK_NODE_ANNOTATION)},
        "spec": {"taints": spec.get("taints", [])},
        "status": {"capacity": resources, "allocatable": resources},
    }


class LocalCluster:
    """One local control plane, its state kept in ``state_dir`` (pids, ports, certs, logs)."""

    def __init__(self, name: str = "default", state_dir: Path | None = None, *, tie_to_parent: bool = False):
        self.name = name
        self.state_dir = state_dir or cache_dir() / "clusters" / name
        self.tie_to_parent = tie_to_parent

    # -- paths -------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    def _log(self, component: str) -> Path:
        return self.state_dir / "logs" / f"{component}.log"

    def _load_state(self) -> ClusterState:
        path = self.state_dir / "state.json"
        return ClusterState(**json.loads(path.read_text())) if path.exists() else ClusterState()

    def _save_state(self, state: ClusterState) -> None:
        (self.state_dir / "state.json").write_text(json.dumps(asdict(state), indent=2))

    # -- lifecycle ---------------------------------------------------------------------------
    def running(self) -> dict[str, bool]:
        state = self._load_state()
        return {c: bool(state.pids.get(c)) and processes.alive(state.pids[c]) for c in COMPONENTS}

    def up(self, timeout: float = 120.0) -> LocalCluster:
        """Start every component (or keep the ones already running) and register the nodes."""
        if all(self.running().values()) and self._ready(self._load_state(), 2.0):
            return self
        self.down(keep_certs=True)
        bins = ensure_binaries(
            ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pki = create_pki(self.state_dir / "pki")
        state = ClusterState(
            ports={k: processes.free_port() for k in ("etcd", "etcd_peer", "apiserver", "kwok")},
            tokens={u: secrets.token_hex(16) for u in ("admin", "controller-manager", "scheduler", "kwok")},
        )
        self._write_auth(state, pki["ca_cert"])
        self._save_state(state)
        try:
            self._start(state, "etcd", self._etcd_args(bins["etcd"], state))
            self._wait(lambda: processes.port_open(state.ports["etcd"]), "etcd", 30)
            self._start(state, "kube-apiserver", self._apiserver_args(bins["kube-apiserver"], state, pki))
            self._wait(lambda: self._ready(state), "kube-apiserver", timeout)
            self._start(
                state, "kube-controller-manager", self._kcm_args(bins["kube-controller-manager"], pki)
            )
            self._start(state, "kube-scheduler", self._scheduler_args(bins["kube-scheduler"]))
            self._start(state, "kwok", self._kwok_args(bins["kwok"], state))
            self.register_nodes()
            self._wait(self._nodes_ready, "kwok (nodes Ready)", 60)
        except BaseException:
            self.down(keep_certs=True)
            raise
        return self

    def down(self, keep_certs: bool = False) -> None:
        """Stop every component and delete the cluster's data: no process or port survives."""
        state = self._load_state()
        # Test data only: a short grace period, then SIGKILL (the API server otherwise drains
        # watches for up to a minute).
        processes.stop([p for p in state.pids.values() if p], timeout=3.0)
        if keep_certs:
            for sub in ("etcd", "state.json"):
                path = self.state_dir / sub
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def status(self) -> dict[str, Any]:
        state = self._load_state()
        return {
            "name": self.name,
            "components": self.running(),
            "ports": state.ports,
            "ready": bool(state.ports) and self._ready(state, 2.0),
            "kubeconfig": str(self.kubeconfig),
        }

    # -- clients -----------------------------------------------------------------------------
    def api_client(self) -> ApiClient:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def register_nodes(self, nodes_file: Path = NODES_FILE) -> list[str]:
        """Create (or recreate) the simulated nodes described in ``nodes_file``."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        api = client.CoreV1Api(self.api_client())
        names = []
        for spec in yaml.safe_load(nodes_file.read_text()):
            body = node_manifest(spec)
            with contextlib.suppress(ApiException):
                api.delete_node(spec["name"])
            api.create_node(body)
            names.append(spec["name"])
        return names

    # -- internals ---------------------------------------------------------------------------
    def _write_auth(self, state: ClusterState, ca_file: Path) -> None:
        groups = {
            "admin": "system:masters",
            "controller-manager": "system:masters",
            "scheduler": "system:masters",
        }
        groups["kwok"] = "system:masters"
        users = {"admin": "admin", "controller-manager": "system:kube-controller-manager"}
        users |= {"scheduler": "system:kube-scheduler", "kwok": "kwok"}
        rows = [f'{state.tokens[k]},{users[k]},{users[k]},"{groups[k]}"' for k in state.tokens]
        tokens = self.state_dir / "pki" / "tokens.csv"
        tokens.write_text("\n".join(rows) + "\n")
        tokens.chmod(0o600)
        server = f"https://127.0.0.1:{state.ports['apiserver']}"
        for key, path in (
            ("admin", self.kubeconfig),
            *((k, self.state_dir / f"{k}.kubeconfig") for k in users),
        ):
            path.write_text(yaml.safe_dump(_kubeconfig(server, ca_file, users[key], state.tokens[key])))
            path.chmod(0o600)

    def _start(self, state: ClusterState, component: str, args: list[str]) -> None:
        state.pids[component] = processes.start(args, self._log(component), tie_to_parent=self.tie_to_parent)
        self._save_state(state)

    def _wait(self, check: Any, component: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = self._load_state()
        while time.monotonic() < deadline:
            if check():
                return
            pid = state.pids.get(component.split(" ")[0])
            if pid and not processes.alive(pid):
                break
            time.sleep(0.2)
        tail = ""
        log = self._log(component.split(" ")[0])
        if log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise ClusterError(f"{component} did not become ready in {timeout:.0f} s; log {log}:\n{tail}")

    def _ready(self, state: ClusterState, timeout: float = 2.0) -> bool:
        import ssl

        import httpx

        if "apiserver" not in state.ports:
            return False
        try:
            r = httpx.get(
                f"https://127.0.0.1:{state.ports['apiserver']}/readyz",
                headers={"Authorization": f"Bearer {state.tokens['admin']}"},
                verify=ssl.create_default_context(cafile=str(self.state_dir / "pki" / "ca.crt")),
                timeout=timeout,
            )
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    def _nodes_ready(self) -> bool:
        from kubernetes import client

        nodes = client.CoreV1Api(self.api_client()).list_node().items
        return bool(nodes) and all(
            any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or [])) for n in nodes
        )

    def _etcd_args(self, binary: Path, state: ClusterState) -> list[str]:
        client_url = f"http://127.0.0.1:{state.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{state.ports['etcd_peer']}"
        return [
            str(binary),
            f"--name=healthnav-{self.name}",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=healthnav-{self.name}={peer_url}",
            "--unsafe-no-fsync=true",  # test data: durability is not worth the fsync latency
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ]

    def _apiserver_args(self, binary: Path, state: ClusterState, pki: dict[str, Path]) -> list[str]:
        return [
            str(binary),
            f"--etcd-servers=http://127.0.0.1:{state.ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={state.ports['apiserver']}",
            f"--cert-dir={self.state_dir / 'pki'}",
            f"--tls-cert-file={pki['serving_cert']}",
            f"--tls-private-key-file={pki['serving_key']}",
            f"--token-auth-file={self.state_dir / 'pki' / 'tokens.csv'}",
            # Published in kube-system/extension-apiserver-authentication, which the scheduler's
            # and controller-manager's own servers wait for.
            f"--client-ca-file={pki['ca_cert']}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki['sa_pub']}",
            f"--service-account-signing-key-file={pki['sa_key']}",
            "--api-audiences=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            # It taints new nodes not-ready until node lifecycle (off: no kubelets) lifts the taint.
            "--disable-admission-plugins=TaintNodesByCondition",
            "--enable-priority-and-fairness=false",
            "--max-requests-inflight=1000",
            "--max-mutating-requests-inflight=500",
            "--profiling=false",
            "--v=1",
        ]

    def _kcm_args(self, binary: Path, pki: dict[str, Path]) -> list[str]:
        kubeconfig = self.state_dir / "controller-manager.kubeconfig"
        return [
            str(binary),
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--cluster-name=healthnav-local",
            # No kubelets send heartbeats: node lifecycle would taint every node unreachable.
            "--controllers=*,-nodelifecycle,-nodeipam",
            f"--service-account-private-key-file={pki['sa_key']}",
            f"--root-ca-file={pki['ca_cert']}",
            "--use-service-account-credentials=false",
            "--concurrent-job-syncs=20",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=1",
        ]

    def _scheduler_args(self, binary: Path) -> list[str]:
        kubeconfig = self.state_dir / "scheduler.kubeconfig"
        return [
            str(binary),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={processes.free_port()}",
            "--leader-elect=false",
            "--v=1",
        ]

    def _kwok_args(self, binary: Path, state: ClusterState) -> list[str]:
        return [
            str(binary),
            f"--kubeconfig={self.state_dir / 'kwok.kubeconfig'}",
            "--manage-all-nodes=true",
            f"--config={STAGES_FILE}",
            f"--server-address=127.0.0.1:{state.ports['kwok']}",
            "--cidr=10.244.0.0/16",
            "--node-ip=10.0.0.10",
        ]


def kubectl_path() -> str:
    """The kubectl built with the control plane (falls back to one on PATH)."""
    from healthnav.devenv.binaries import binary_path

    built = binary_path("kubectl")
    return str(built) if os.access(built, os.X_OK) else (shutil.which("kubectl") or "kubectl")

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
import functools
import json
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from healthnav.devenv import network, processes
from healthnav.devenv.binaries import binary_path, cache_dir, ensure_binaries
from healthnav.devenv.errors import DevenvError
from healthnav.devenv.node import (
    NODE_BINARIES,
    NODE_NAME,
    NodeImage,
    RealNode,
    missing_prerequisites,
    node_rbac,
)
from healthnav.devenv.pki import CertRequest, create_pki, issue_cert

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

HERE = Path(__file__).resolve().parent
STAGES_FILE = HERE / "kwok-stages.yaml"
NODES_FILE = HERE / "nodes.yaml"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
KWOK_NODE_ANNOTATION = {"kwok.x-k8s.io/node": "fake"}


class ClusterError(DevenvError):
    """The control plane could not start; the message names the component and its log."""


@dataclass
class ClusterState:
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    real_node: bool = False


# Who is who: token user -> (user name, group). The node's components authenticate as what the
# API server's Node authorizer and bootstrap roles expect (system:node:<name> in system:nodes, ...).
CONTROL_PLANE_USERS = {
    "admin": ("admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", "system:masters"),
    "scheduler": ("system:kube-scheduler", "system:masters"),
    "kwok": ("kwok", "system:masters"),
}
NODE_USERS = {
    "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", "system:node-proxiers"),
    "coredns": ("coredns", "healthnav:dns"),
    "kuberay": ("kuberay-operator", "healthnav:kuberay"),
}


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

    def __init__(
        self,
        name: str = "default",
        state_dir: Path | None = None,
        *,
        tie_to_parent: bool = False,
        real_node: bool = False,
    ):
        self.name = name
        self.state_dir = state_dir or cache_dir() / "clusters" / name
        self.tie_to_parent = tie_to_parent
        self.real_node = real_node

    @property
    def server_ip(self) -> str:
        """Where the API server listens: loopback, or the pod bridge's address when pods must reach it."""
        return network.NODE_IP if self.real_node else "127.0.0.1"

    @staticmethod
    def _server_ip(state: ClusterState) -> str:
        return network.NODE_IP if state.real_node else "127.0.0.1"

    @property
    def node(self) -> RealNode:
        return RealNode(self.name, self.state_dir, tie_to_parent=self.tie_to_parent)

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
        components = [*COMPONENTS, *(("kuberay-operator",) if state.real_node else ())]
        alive = {c: bool(state.pids.get(c)) and processes.alive(state.pids[c]) for c in components}
        if state.real_node:
            alive |= self.node.running()
        return alive

    def up(self, timeout: float = 120.0, images: list[str] | None = None) -> LocalCluster:
        """Start every component (or keep the ones already running) and register the nodes.

        With ``real_node``, also the pod network, the real node (containerd, kubelet, kube-proxy,
        CoreDNS) with the project's images loaded (``images``: names from
        :data:`healthnav.devenv.images.IMAGES`, default all; built first when missing), and
        KubeRay's operator.
        """
        current = self._load_state()
        if current.real_node == self.real_node and all(self.running().values()) and self._ready(current, 2.0):
            return self
        self.down(keep_certs=True)
        if self.real_node:
            self._check_real_node_host()
        bins = ensure_binaries(
            ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pki = create_pki(self.state_dir / "pki")
        users = {**CONTROL_PLANE_USERS, **(NODE_USERS if self.real_node else {})}
        state = ClusterState(
            ports={k: processes.free_port() for k in ("etcd", "etcd_peer", "apiserver", "kwok", "kuberay")},
            tokens={u: secrets.token_hex(16) for u in users},
            real_node=self.real_node,
        )
        self._write_auth(state, pki["ca_cert"])
        self._save_state(state)
        try:
            if self.real_node:
                network.NodeNetwork().up()
                self._issue_node_certs()
            self._start(state, "etcd", self._etcd_args(bins["etcd"], state))
            self._wait(lambda: processes.port_open(state.ports["etcd"]), "etcd", 30)
            self._start(state, "kube-apiserver", self._apiserver_args(bins["kube-apiserver"], state, pki))
            self._wait(lambda: self._ready(state), "kube-apiserver", timeout)
            network.FakeAddressRoutes(str(self.state_dir)).add(state.pids["kube-apiserver"])
            self._start(
                state, "kube-controller-manager", self._kcm_args(bins["kube-controller-manager"], pki)
            )
            self._start(state, "kube-scheduler", self._scheduler_args(bins["kube-scheduler"]))
            self._start(state, "kwok", self._kwok_args(bins["kwok"], state))
            self.register_nodes()
            self._wait(self._nodes_ready, "kwok (nodes Ready)", 60)
            if self.real_node:
                self._start_real_node(images, timeout=max(timeout, 180.0))
                self._start_kuberay(state)
        except BaseException:
            self.down(keep_certs=True)
            raise
        return self

    def down(self, keep_certs: bool = False) -> None:
        """Stop every component and delete the cluster's data: no process, port, mount, network
        namespace, veth, route or nftables rule survives."""
        state = self._load_state()
        if pid := state.pids.pop("kuberay-operator", None):
            processes.stop([pid], timeout=5.0)
        if state.real_node or self.node.paths.state.exists():
            self.node.down()
        # Test data only: a short grace period, then SIGKILL (the API server otherwise drains
        # watches for up to a minute).
        processes.stop([p for p in state.pids.values() if p], timeout=3.0)
        network.FakeAddressRoutes(str(self.state_dir)).remove()
        if state.real_node:
            network.NodeNetwork().down()
            network.release_real_node(str(self.state_dir))
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
            "realNode": NODE_NAME if state.real_node else None,
        }

    # -- the real node -----------------------------------------------------------------------
    def _check_real_node_host(self) -> None:
        """Fail at once, naming what is missing and how to fix it."""
        problems = missing_prerequisites()
        missing = [n for n in NODE_BINARIES if not os.access(binary_path(n), os.X_OK)]
        if missing and shutil.which("go") is None:
            problems.append(
                f"Go 1.26+ is needed to build {', '.join(missing)}: install it from https://go.dev/dl"
            )
        if problems:
            raise ClusterError("cannot start a real node on this machine:\n  - " + "\n  - ".join(problems))
        owner = network.claim_real_node(str(self.state_dir))
        if owner:
            raise ClusterError(
                f"another local cluster runs the real node ({owner}); stop it first with "
                "`hnav dev cluster down --name <its name>` (one real node per machine)"
            )

    def _issue_node_certs(self) -> None:
        pki_dir = self.state_dir / "pki"
        issue_cert(
            pki_dir,
            "kubelet",
            CertRequest(NODE_NAME, dns_names=(NODE_NAME,), ip_addresses=(network.NODE_IP,), server=True),
        )
        issue_cert(
            pki_dir, "apiserver-kubelet-client", CertRequest("kube-apiserver-kubelet-client", client=True)
        )

    def _start_real_node(self, image_names: list[str] | None, timeout: float) -> None:
        from healthnav.devenv import images as local_images
        from healthnav.operator.kube import Kube

        kube = Kube(self.api_client(), max_workers=2)
        try:
            for obj in node_rbac():
                kube.create_or_get(obj)
        finally:
            kube.close()
        names = [
            local_images.PAUSE,
            *(n for n in (image_names or local_images.DEFAULT_NAMES) if n != "pause"),
        ]
        built = local_images.ensure_images(names)
        engine = local_images.detect_engine()
        to_load = [
            NodeImage(i.ref, i.image_id, functools.partial(local_images.export_argv, engine, i.ref))
            for i in built
        ]
        kubeconfigs = {k: self.state_dir / f"{k}.kubeconfig" for k in ("kubelet", "kube-proxy", "coredns")}
        sandbox = next(i for i in built if i.name == local_images.PAUSE)
        self.node.up(kubeconfigs, self._real_node_ready, to_load, sandbox.ref, timeout=timeout)

    def _real_node_ready(self) -> bool:
        from kubernetes import client

        node = client.CoreV1Api(self.api_client()).read_node(NODE_NAME)
        return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))

    def _start_kuberay(self, state: ClusterState) -> None:
        """KubeRay's operator, outside the cluster, reaching Ray's dashboard through the API server."""
        from healthnav.devenv.kuberay import install_crds, install_rbac, operator_args

        install_crds(self.api_client())
        install_rbac(self.api_client(), user=NODE_USERS["kuberay"][0])
        health = processes.free_port()
        state.pids["kuberay-operator"] = processes.start(
            operator_args(metrics_port=state.ports["kuberay"], health_port=health),
            self._log("kuberay-operator"),
            tie_to_parent=self.tie_to_parent,
            env={"KUBECONFIG": str(self.state_dir / "kuberay.kubeconfig")},
        )
        self._save_state(state)
        self._wait(lambda: processes.port_open(health), "kuberay-operator", 60)

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
        users = {**CONTROL_PLANE_USERS, **NODE_USERS}
        rows = [f'{state.tokens[k]},{users[k][0]},{users[k][0]},"{users[k][1]}"' for k in state.tokens]
        tokens = self.state_dir / "pki" / "tokens.csv"
        tokens.write_text("\n".join(rows) + "\n")
        tokens.chmod(0o600)
        server = f"https://{self.server_ip}:{state.ports['apiserver']}"
        for key, path in (
            ("admin", self.kubeconfig),
            *((k, self.state_dir / f"{k}.kubeconfig") for k in state.tokens),
        ):
            path.write_text(yaml.safe_dump(_kubeconfig(server, ca_file, users[key][0], state.tokens[key])))
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
                f"https://{self._server_ip(state)}:{state.ports['apiserver']}/readyz",
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
            f"--bind-address={self.server_ip}",
            f"--advertise-address={self.server_ip}",
            f"--secure-port={state.ports['apiserver']}",
            f"--cert-dir={self.state_dir / 'pki'}",
            f"--tls-cert-file={pki['serving_cert']}",
            f"--tls-private-key-file={pki['serving_key']}",
            f"--token-auth-file={self.state_dir / 'pki' / 'tokens.csv'}",
            # Published in kube-system/extension-apiserver-authentication, which the scheduler's
            # and controller-manager's own servers wait for.
            f"--client-ca-file={pki['ca_cert']}",
            *(() if self.real_node else ("--authorization-mode=RBAC",)),
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki['sa_pub']}",
            f"--service-account-signing-key-file={pki['sa_key']}",
            "--api-audiences=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={network.SERVICE_CIDR}",
            "--allow-privileged=true",
            # It taints new nodes not-ready until node lifecycle (off: no kubelets) lifts the taint.
            "--disable-admission-plugins=TaintNodesByCondition",
            "--enable-priority-and-fairness=false",
            "--max-requests-inflight=1000",
            "--max-mutating-requests-inflight=500",
            "--profiling=false",
            "--v=1",
            *(self._real_node_apiserver_args() if self.real_node else ["--endpoint-reconciler-type=none"]),
        ]

    def _real_node_apiserver_args(self) -> list[str]:
        """What a kubelet needs of the API server: the Node authorizer, and a verified way back to it."""
        pki_dir = self.state_dir / "pki"
        return [
            # The `kubernetes` Service's endpoint is the advertised address: pods reach the API there.
            "--endpoint-reconciler-type=lease",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-certificate-authority={pki_dir / 'ca.crt'}",
            f"--kubelet-client-certificate={pki_dir / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki_dir / 'apiserver-kubelet-client.key'}",
            # The node's InternalIP (the pod bridge's address), never a name to look up in DNS.
            "--kubelet-preferred-address-types=InternalIP",
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
            # Only the simulated nodes: the real node has its own kubelet.
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--config={STAGES_FILE}",
            f"--server-address=127.0.0.1:{state.ports['kwok']}",
            # Addresses routed `unreachable` (healthnav.devenv.network): nothing dials them off-machine.
            f"--cidr={network.FAKE_POD_CIDR}",
            f"--node-ip={network.FAKE_NODE_IP}",
        ]


def kubectl_path() -> str:
    """The kubectl built with the control plane (falls back to one on PATH)."""
    from healthnav.devenv.binaries import binary_path

    built = binary_path("kubectl")
    return str(built) if os.access(built, os.X_OK) else (shutil.which("kubectl") or "kubectl")

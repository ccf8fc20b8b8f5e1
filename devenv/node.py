"""A real Kubernetes node on this machine: containerd + runc + a kubelet, kube-proxy and CoreDNS.

``hnav dev cluster up --real-node`` adds this node beside kwok's simulated GPU nodes. Pods that
must really run - the operator installed by the chart, FineTuneJob training pods that ask for no
GPU, KubeRay's Ray pods - select it with the label ``healthnav.dev/real-node=true``; kwok keeps
playing the GPU nodes.

Every binary is built from its Go module (``devenv/build-binaries.sh``) at the versions in
``versions.env``; the kubelet is the same Kubernetes release as the control plane. What it took
on a cgroup-v1 Debian host without a container registry (each is a setting below, with its
reason): the kubelet accepts cgroup v1 only with ``failCgroupV1: false``; the machine does not
grant CAP_SYS_RESOURCE, so containerd's CRI restricts oom_score_adj; containerd would pull
``registry.k8s.io/pause``, so its sandbox image is pinned to a locally built one and every
registry resolves to a closed loopback port (a pull attempt fails here, it never leaves the
machine); the kubelet may not register a loopback address, so it registers the pod bridge's
address, which the API server dials directly (``--kubelet-preferred-address-types=InternalIP``)
with no DNS lookup.

Everything the node creates lives under the cluster's state directory (configs, kubelet root,
pod logs), a short run directory for sockets (``/run/healthnav/<cluster>``), the pod bridge (see
:mod:`healthnav.devenv.network`) and a cgroup subtree; :meth:`RealNode.down` removes all of it
and :meth:`RealNode.leftovers` proves it. containerd's content store is kept in the cache
(``$HEALTHNAV_CACHE/node/containerd``) so images imported once are not imported again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from healthnav.devenv import network, processes
from healthnav.devenv.binaries import binary_path, cache_dir, ensure_binaries, ensure_cni_plugins
from healthnav.devenv.errors import DevenvError

NODE_NAME = "healthnav-real-0"
REAL_NODE_LABEL = "healthnav.dev/real-node"
CLUSTER_DOMAIN = "cluster.local"
NODE_BINARIES = [
    "kubelet",
    "kube-proxy",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "coredns",
    "crictl",
]
CGROUP_V1_CONTROLLERS = (
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "systemd",
)
# The kubelet sets these host sysctls at start (KernelTunableModify); down() puts them back.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "vm/panic_on_oom")
CLOSED_REGISTRY = "http://127.0.0.1:9"
"""Where every image pull resolves: loopback's discard port, closed - a pull fails at once, locally."""


class NodeError(DevenvError):
    """The real node could not start or stop; the message names the piece and the fix."""


IMAGE_ID_LABEL = "healthnav.dev/image-id"
"""Label on images loaded into the node: the builder's image id, so a rebuilt image is reloaded."""


@dataclass(frozen=True)
class NodeImage:
    """An image to load into the node: its ref, the builder's id, and the command that writes it
    as an image archive to a given path (``buildah push … docker-archive:PATH``, ``docker save``)."""

    ref: str
    image_id: str
    export_argv: Callable[[Path], list[str]]


# --- preflight ------------------------------------------------------------------------------------


def missing_prerequisites() -> list[str]:
    """What this host lacks for a real node, each with its fix (empty when it can run one)."""
    problems = []
    if os.uname().sysname != "Linux":
        problems.append("a real node needs Linux (containerd, runc, cgroups, network namespaces)")
        return problems
    if not network.can_admin_network() or os.geteuid() != 0:
        problems.append("a real node runs containerd and the kubelet as root: run as root (sudo)")
    if not Path("/sys/fs/cgroup").is_dir() or not any(
        Path("/sys/fs/cgroup", c).is_dir() for c in ("memory", "cgroup.controllers")
    ):
        problems.append("no cgroup file system at /sys/fs/cgroup: mount cgroup v1 controllers or cgroup2")
    if "overlay" not in Path("/proc/filesystems").read_text():
        problems.append("the kernel has no overlayfs (containerd's snapshotter): modprobe overlay")
    for tool, package in (("nft", "nftables"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            problems.append(f"`{tool}` is missing: apt-get install {package} (or `make node-deps`)")
    if not Path("/proc/sys/net/bridge").exists() and not Path("/sys/module/bridge").exists():
        problems.append("the kernel has no bridge support: modprobe bridge br_netfilter")
    return problems


def cgroup_v2_only() -> bool:
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()


# --- pure renderers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodePaths:
    """Where the node's pieces live: per-cluster state, a short run dir for sockets, the image store."""

    state: Path
    run: Path
    containerd_root: Path

    @classmethod
    def for_cluster(cls, state_dir: Path) -> NodePaths:
        # Unix sockets allow ~107 characters: the run dir is short and keyed by the state dir.
        key = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:10]
        return cls(state_dir / "node", network.RUN_DIR / key, cache_dir() / "node" / "containerd")

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.state / "containerd.toml"

    @property
    def kubelet_root(self) -> Path:
        return self.state / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.state / "pod-logs"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state / "cni"

    @property
    def registry_hosts_dir(self) -> Path:
        return self.state / "registry-hosts"

    @property
    def resolv_conf(self) -> Path:
        return self.state / "resolv.conf"

    @property
    def logs(self) -> Path:
        return self.state / "logs"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def render_toml(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """A minimal TOML writer for containerd's config (scalars, lists and nested tables)."""
    out = "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in doc.items() if not isinstance(v, dict))
    for key, value in doc.items():
        if isinstance(value, dict):
            path = (*prefix, _toml_key(key))
            out += f"\n[{'.'.join(path)}]\n" + render_toml(value, path)
    return out


def containerd_config(paths: NodePaths, sandbox_image: str) -> dict[str, Any]:
    """containerd's config: its own root/state/socket, the CRI wired to our runc, CNI and images."""
    cri_runtime = "io.containerd.cri.v1.runtime"
    return {
        "version": 3,
        "root": str(paths.containerd_root),
        "state": str(paths.run / "state"),
        "imports": [],
        "grpc": {"address": str(paths.containerd_socket)},
        "ttrpc": {"address": str(paths.run / "containerd.sock.ttrpc")},
        "plugins": {
            "io.containerd.cri.v1.images": {
                "snapshotter": "overlayfs",
                # Never pull the sandbox (pause) image: it is built and imported locally.
                "pinned_images": {"sandbox": sandbox_image},
                "registry": {"config_path": str(paths.registry_hosts_dir)},
            },
            cri_runtime: {
                "enable_selinux": False,
                "disable_apparmor": True,
                # The host does not grant CAP_SYS_RESOURCE: containerd may only raise oom_score_adj.
                "restrict_oom_score_adj": True,
                # Network namespaces under containerd's own state dir, not /var/run/netns.
                "netns_mounts_under_state_dir": True,
                "enable_cdi": False,
                "containerd": {
                    "default_runtime_name": "runc",
                    "runtimes": {
                        "runc": {
                            "runtime_type": "io.containerd.runc.v2",
                            "options": {"BinaryName": str(binary_path("runc")), "SystemdCgroup": False},
                        }
                    },
                },
                "cni": {"bin_dirs": [str(ensure_cni_plugins())], "conf_dir": str(paths.cni_conf_dir)},
            },
            "io.containerd.grpc.v1.cri": {"stream_server_address": "127.0.0.1", "stream_server_port": "0"},
            "io.containerd.nri.v1.nri": {"disable": True},
            "io.containerd.internal.v1.opt": {"path": str(paths.state / "opt")},
        },
    }


def registry_hosts_toml() -> str:
    """``_default/hosts.toml``: every registry resolves to a closed loopback port (no pull leaves)."""
    return (
        f'server = "{CLOSED_REGISTRY}"\n\n[host."{CLOSED_REGISTRY}"]\n  capabilities = ["pull", "resolve"]\n'
    )


@dataclass(frozen=True)
class KubeletEndpoints:
    """The ports the node's components listen on (free ports chosen at start)."""

    kubelet: int
    kubelet_healthz: int
    proxy_healthz: int
    proxy_metrics: int
    dns_health: int


def cgroup_root(cluster_name: str) -> str:
    return f"/healthnav-{cluster_name}"


def kubelet_config(
    paths: NodePaths, pki_dir: Path, ports: KubeletEndpoints, cluster_name: str
) -> dict[str, Any]:
    """The KubeletConfiguration of the real node."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.NODE_IP,
        "port": ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.kubelet_healthz,
        "tlsCertFile": str(pki_dir / "kubelet.crt"),
        "tlsPrivateKeyFile": str(pki_dir / "kubelet.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki_dir / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "imageServiceEndpoint": f"unix://{paths.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root(cluster_name),
        "cgroupsPerQOS": True,
        # This host is cgroup v1; the kubelet refuses it unless told otherwise.
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [network.NODE_IP],
        # The host's resolver is off the machine: pods only ever ask the cluster's DNS.
        "resolvConf": str(paths.resolv_conf),
        "podLogsDir": str(paths.pod_logs),
        "volumePluginDir": str(paths.state / "volume-plugins"),
        "maxPods": 40,
        "serializeImagePulls": False,
        # A development machine's disk is shared with everything else: evict only when nearly full,
        # and never garbage-collect the locally built images (they cannot be pulled back).
        "evictionHard": {
            "memory.available": "200Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "registerNode": True,
        # The iptables "canary" and KUBE-FIREWALL chains serve iptables-mode kube-proxy; ours runs in
        # nftables mode, and the host's iptables must be left as it was found.
        "makeIPTablesUtilChains": False,
        "shutdownGracePeriod": "0s",
        "logging": {"format": "text", "verbosity": 1},
    }


def kube_proxy_config(kubeconfig: Path, ports: KubeletEndpoints) -> dict[str, Any]:
    """kube-proxy in nftables mode: all its rules live in its own tables (``kube-proxy``)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "nftables",
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": network.NODE_SUBNET,
        "bindAddress": network.NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
        "nodePortAddresses": [f"{network.NODE_IP}/32"],
        # Leave the host's conntrack sysctls alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def corefile(kubeconfig: Path, ports: KubeletEndpoints) -> str:
    """CoreDNS: cluster.local from the API server; every other name NXDOMAIN, never forwarded."""
    return (
        f"{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{\n"
        f"    bind {network.NODE_IP}\n"
        "    errors\n"
        f"    health 127.0.0.1:{ports.dns_health}\n"
        f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{\n"
        f"        kubeconfig {kubeconfig}\n"
        "        pods insecure\n"
        "    }\n"
        "    cache 5\n"
        "}\n"
        ".:53 {\n"
        f"    bind {network.NODE_IP}\n"
        "    template ANY ANY {\n"
        "        rcode NXDOMAIN\n"
        "    }\n"
        "}\n"
    )


# RBAC the node's components need beyond what the API server's bootstrap roles grant by name.
def node_rbac() -> list[dict[str, Any]]:
    """ClusterRoles/Bindings: the API server → kubelet, kube-proxy and CoreDNS, least privilege."""

    def binding(name: str, role: str, user: str) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }

    coredns_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "healthnav:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["services", "namespaces", "pods"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    }
    return [
        binding("healthnav:apiserver-kubelet", "system:kubelet-api-admin", "kube-apiserver-kubelet-client"),
        binding("healthnav:kube-proxy", "system:node-proxier", "system:kube-proxy"),
        coredns_role,
        binding("healthnav:coredns", "healthnav:coredns", "coredns"),
    ]


# --- the node ---------------------------------------------------------------------------------------


@dataclass
class NodeState:
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)


class RealNode:
    """The real node of one local cluster; the cluster calls :meth:`up` and :meth:`down`."""

    def __init__(self, cluster_name: str, state_dir: Path, *, tie_to_parent: bool) -> None:
        self.cluster_name = cluster_name
        self.paths = NodePaths.for_cluster(state_dir)
        self.pki_dir = state_dir / "pki"
        self.tie_to_parent = tie_to_parent
        self.network = network.NodeNetwork()

    # -- state ------------------------------------------------------------------------------------
    @property
    def _state_file(self) -> Path:
        return self.paths.state / "state.json"

    def _load(self) -> NodeState:
        if self._state_file.exists():
            return NodeState(**json.loads(self._state_file.read_text()))
        return NodeState()

    def _save(self, state: NodeState) -> None:
        self.paths.state.mkdir(parents=True, exist_ok=True)
        self._state_file.write_text(json.dumps(asdict(state), indent=2))

    def _log(self, component: str) -> Path:
        return self.paths.logs / f"{component}.log"

    def running(self) -> dict[str, bool]:
        state = self._load()
        return {c: processes.alive(p) for c, p in state.pids.items()}

    # -- lifecycle --------------------------------------------------------------------------------
    def up(
        self,
        kubeconfigs: dict[str, Path],
        ready: Callable[[], bool],
        images: list[NodeImage],
        sandbox_image: str,
        timeout: float = 180.0,
    ) -> None:
        """Start containerd (loading ``images``), the kubelet, kube-proxy and CoreDNS.

        ``kubeconfigs`` holds the kubelet's, kube-proxy's and CoreDNS's credentials; ``ready``
        tells whether the Node object reports Ready.
        """
        bins = ensure_binaries(NODE_BINARIES)
        self._prepare_dirs()
        ports = KubeletEndpoints(*(processes.free_port() for _ in range(5)))
        state = NodeState(ports=asdict(ports), sysctls=self._read_sysctls())
        self._save(state)
        self._write_configs(ports, sandbox_image, kubeconfigs)
        # containerd finds its shim (and the shim runc) on PATH.
        shim_dirs = f"{bins['containerd-shim-runc-v2'].parent}:{bins['runc'].parent}"
        env = {"PATH": f"{shim_dirs}:{os.environ.get('PATH', '')}"}
        self._start(
            state, "containerd", [str(bins["containerd"]), "--config", str(self.paths.containerd_config)], env
        )
        self._wait(lambda: self._ctr_ok(), "containerd", 60)
        self.load_images(images)
        self._start(state, "kubelet", self._kubelet_args(bins["kubelet"], kubeconfigs["kubelet"]))
        self._start(
            state,
            "kube-proxy",
            [str(bins["kube-proxy"]), f"--config={self.paths.state / 'kube-proxy.yaml'}", "--v=1"],
        )
        self._start(state, "coredns", [str(bins["coredns"]), "-conf", str(self.paths.state / "Corefile")])
        self._wait(ready, "kubelet (node Ready)", timeout)
        self._wait(lambda: processes.port_open(ports.dns_health), "coredns", 60)

    def down(self) -> None:
        """Stop every pod, process, mount, veth, rule and cgroup the node created (idempotent)."""
        state = self._load()
        for component in ("kube-proxy", "coredns", "kubelet"):
            if pid := state.pids.get(component):
                processes.stop([pid], timeout=5.0)
        if state.pids.get("containerd") and processes.alive(state.pids["containerd"]):
            self._remove_pod_sandboxes()
        if pid := state.pids.get("containerd"):
            processes.stop([pid], timeout=10.0)
        self._kill_shims()
        self._kill_cgroup_processes()
        self._unmount_all()
        self._cleanup_kube_proxy()
        self.network.down()
        self._remove_cgroups()
        self._restore_sysctls(state.sysctls)
        shutil.rmtree(self.paths.run, ignore_errors=True)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.paths.state)

    def leftovers(self) -> list[str]:
        """Anything of this node still on the machine (empty after :meth:`down`)."""
        found = []
        state = self._load()
        found += [f"process {c} ({p})" for c, p in state.pids.items() if processes.alive(p)]
        found += [f"process {pid}: {cmd}" for pid, cmd in self._our_processes()]
        found += [f"process {pid} in the node's cgroups" for pid in sorted(self._cgroup_pids())]
        found += [f"mount {m}" for m in self._our_mounts()]
        if self.network.exists():
            found.append(f"bridge {self.network.bridge}")
        tables = network._run(["nft", "list", "tables"], check=False)
        found += [
            f"nftables {t.strip()}"
            for t in tables.splitlines()
            if "kube-proxy" in t or network.NFT_TABLE in t
        ]
        found += [f"cgroup {c}" for c in self._our_cgroups()]
        if self.paths.run.exists():
            found.append(f"run dir {self.paths.run}")
        return found

    # -- images -------------------------------------------------------------------------------------
    def ctr(self, *args: str, timeout: float = 600.0) -> str:
        proc = subprocess.run(
            [str(binary_path("ctr")), "--address", str(self.paths.containerd_socket), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def loaded_images(self) -> dict[str, str]:
        """{ref: builder image id} of the images loaded by :meth:`load_images`."""
        loaded = {}
        for line in self.ctr("images", "list").splitlines()[1:]:
            fields = line.split()
            labels = dict(kv.split("=", 1) for kv in fields[-1].split(",") if "=" in kv) if fields else {}
            if IMAGE_ID_LABEL in labels:
                loaded[fields[0]] = labels[IMAGE_ID_LABEL]
        return loaded

    def load_images(self, images: list[NodeImage]) -> list[str]:
        """Import the images containerd does not hold yet (by builder image id); the refs imported.

        The builder streams each archive through a FIFO straight into ``ctr import``: a multi-GB
        image is never written out as a file, and its unpacked layers are discarded from the
        content store, so it is kept once by the builder and once as containerd's snapshot.
        """
        loaded = self.loaded_images()
        imported = []
        for image in images:
            if loaded.get(image.ref) == image.image_id:
                continue
            self._stream_import(image)
            imported.append(image.ref)
        return imported

    def _stream_import(self, image: NodeImage) -> None:
        fifo = self.paths.run / "image-import.fifo"
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo, 0o600)
        exporter = subprocess.Popen(
            image.export_argv(fifo), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            self.ctr(
                "images",
                "import",
                "--local",
                "--discard-unpacked-layers",
                "--snapshotter",
                "overlayfs",
                "--label",
                f"{IMAGE_ID_LABEL}={image.image_id}",
                str(fifo),
            )
            _, err = exporter.communicate(timeout=600)
            if exporter.returncode != 0:
                raise NodeError(f"exporting {image.ref} failed: {err.strip()}")
        finally:
            if exporter.poll() is None:
                exporter.kill()
                exporter.wait()
            fifo.unlink(missing_ok=True)

    # -- internals ----------------------------------------------------------------------------------
    def _prepare_dirs(self) -> None:
        for d in (
            self.paths.state,
            self.paths.run,
            self.paths.containerd_root,
            self.paths.kubelet_root,
            self.paths.pod_logs,
            self.paths.cni_conf_dir,
            self.paths.logs,
            self.paths.registry_hosts_dir / "_default",
        ):
            d.mkdir(parents=True, exist_ok=True)
        root = cgroup_root(self.cluster_name)
        if cgroup_v2_only():
            Path("/sys/fs/cgroup" + root).mkdir(exist_ok=True)
        else:
            for controller in CGROUP_V1_CONTROLLERS:
                base = Path("/sys/fs/cgroup", controller)
                if base.is_dir():
                    (base / root.lstrip("/")).mkdir(exist_ok=True)

    def _write_configs(
        self, ports: KubeletEndpoints, sandbox_image: str, kubeconfigs: dict[str, Path]
    ) -> None:
        p = self.paths
        p.containerd_config.write_text(render_toml(containerd_config(p, sandbox_image)))
        (p.registry_hosts_dir / "_default" / "hosts.toml").write_text(registry_hosts_toml())
        (p.cni_conf_dir / "10-healthnav.conflist").write_text(
            json.dumps(network.cni_conflist(ipam_dir=p.state / "cni-ipam"), indent=2)
        )
        p.resolv_conf.write_text(f"nameserver {network.NODE_IP}\n")
        (p.state / "kubelet.yaml").write_text(
            yaml.safe_dump(kubelet_config(p, self.pki_dir, ports, self.cluster_name), sort_keys=False)
        )
        (p.state / "kube-proxy.yaml").write_text(
            yaml.safe_dump(kube_proxy_config(kubeconfigs["kube-proxy"], ports), sort_keys=False)
        )
        (p.state / "Corefile").write_text(corefile(kubeconfigs["coredns"], ports))

    def _kubelet_args(self, binary: Path, kubeconfig: Path) -> list[str]:
        return [
            str(binary),
            f"--config={self.paths.state / 'kubelet.yaml'}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.paths.kubelet_root}",
            f"--cert-dir={self.paths.state / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={network.NODE_IP}",
            f"--node-labels={REAL_NODE_LABEL}=true,node.kubernetes.io/instance-type=local",
            "--v=1",
        ]

    def _start(
        self, state: NodeState, component: str, args: list[str], env: dict[str, str] | None = None
    ) -> None:
        state.pids[component] = processes.start(
            args, self._log(component), tie_to_parent=self.tie_to_parent, env=env
        )
        self._save(state)

    def _wait(self, check: Callable[[], bool], component: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        name = component.split(" ")[0]
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if check():
                    return
            pid = self._load().pids.get(name)
            if pid and not processes.alive(pid):
                break
            time.sleep(0.25)
        log = self._log(name)
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
        raise NodeError(f"{component} did not become ready in {timeout:.0f} s; log {log}:\n{tail}")

    def _ctr_ok(self) -> bool:
        if not self.paths.containerd_socket.exists():
            return False
        self.ctr("version", timeout=10)
        return True

    def _crictl(self, *args: str) -> str:
        proc = subprocess.run(
            [
                str(binary_path("crictl")),
                "--runtime-endpoint",
                f"unix://{self.paths.containerd_socket}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return proc.stdout if proc.returncode == 0 else ""

    def _remove_pod_sandboxes(self) -> None:
        """Stop and remove every pod sandbox through the CRI: the CNI plugin tears each pod's veth down."""
        for sandbox in self._crictl("pods", "-q").split():
            self._crictl("stopp", sandbox)
            self._crictl("rmp", "--force", sandbox)

    def _our_processes(self) -> list[tuple[int, str]]:
        """Shims and containers started for this node: their command line names our socket or run dir."""
        found = []
        markers = (str(self.paths.run), str(self.paths.containerd_root))
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if any(m in cmd for m in markers):
                    found.append((int(proc.name), cmd[:120]))
        return found

    def _kill_shims(self) -> None:
        """containerd's shims outlive containerd by design; stop the ones this node started."""
        for _ in range(2):
            pids = [pid for pid, _ in self._our_processes()]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)

    def _our_mounts(self) -> list[str]:
        roots = (str(self.paths.state), str(self.paths.run), str(self.paths.containerd_root))
        mounts = []
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/mountinfo").read_text().splitlines():
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(roots):
                    mounts.append(point)
        return mounts

    def _unmount_all(self) -> None:
        for point in sorted(self._our_mounts(), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def _cleanup_kube_proxy(self) -> None:
        for family in ("ip", "ip6"):
            network._run(["nft", "delete", "table", family, "kube-proxy"], check=False)

    def _our_cgroups(self) -> list[str]:
        root = cgroup_root(self.cluster_name).lstrip("/")
        bases = (
            [Path("/sys/fs/cgroup")]
            if cgroup_v2_only()
            else [Path("/sys/fs/cgroup", c) for c in CGROUP_V1_CONTROLLERS]
        )
        return [str(b / root) for b in bases if (b / root).exists()]

    def _cgroup_pids(self) -> set[int]:
        """Every process in the node's cgroup subtree.

        Containers outlive a shim that was killed (the command that started the node died, and the
        kernel's parent-death signal took containerd and its shims with it): nothing names them
        but the cgroups the kubelet put them in, which are all under the node's own root.
        """
        pids: set[int] = set()
        for top in self._our_cgroups():
            for procs in Path(top).rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(x) for x in procs.read_text().split())
        pids.discard(os.getpid())
        return pids

    def _kill_cgroup_processes(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (pids := self._cgroup_pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)

    def _remove_cgroups(self) -> None:
        for top in self._our_cgroups():
            for directory in sorted(Path(top).rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if directory.is_dir():
                    with contextlib.suppress(OSError):
                        directory.rmdir()
            with contextlib.suppress(OSError):
                Path(top).rmdir()

    @staticmethod
    def _read_sysctls() -> dict[str, str]:
        values = {}
        for name in KUBELET_SYSCTLS:
            with contextlib.suppress(OSError):
                values[name] = Path("/proc/sys", name).read_text().strip()
        return values

    @staticmethod
    def _restore_sysctls(values: dict[str, str]) -> None:
        for name, value in values.items():
            with contextlib.suppress(OSError):
                Path("/proc/sys", name).write_text(value + "\n")

"""Where the control plane's binaries live, and building them when they are missing.

They are built from their Go modules by ``build-binaries.sh`` into
``$HEALTHNAV_CACHE/bin/<name>-<version>/`` (default ``~/.cache/healthnav``), keyed by the
versions pinned in ``versions.env``: a warm machine never rebuilds, a version bump rebuilds
only what changed, and nothing lands in the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from healthnav.devenv.errors import DevenvError

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "versions.env"
BUILD_SCRIPT = HERE / "build-binaries.sh"

# binary name -> (key in versions.env, build-binaries.sh target that builds it)
BINARIES: dict[str, tuple[str, str]] = {
    "etcd": ("ETCD_VERSION", "etcd"),
    "kube-apiserver": ("KUBERNETES_VERSION", "kubernetes"),
    "kube-controller-manager": ("KUBERNETES_VERSION", "kubernetes"),
    "kube-scheduler": ("KUBERNETES_VERSION", "kubernetes"),
    "kubectl": ("KUBERNETES_VERSION", "kubernetes"),
    "kwok": ("KWOK_VERSION", "kwok"),
    "helm": ("HELM_VERSION", "helm"),
    # the real node (hnav dev cluster up --real-node)
    "kubelet": ("KUBERNETES_VERSION", "kubelet"),
    "kube-proxy": ("KUBERNETES_VERSION", "kubelet"),
    "containerd": ("CONTAINERD_VERSION", "containerd"),
    "containerd-shim-runc-v2": ("CONTAINERD_VERSION", "containerd"),
    "ctr": ("CONTAINERD_VERSION", "containerd"),
    "runc": ("RUNC_VERSION", "runc"),
    "coredns": ("COREDNS_VERSION", "coredns"),
    "crictl": ("CRICTL_VERSION", "crictl"),
    "ray-operator": ("KUBERAY_VERSION", "kuberay"),
}
CONTROL_PLANE = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
]
NODE = ["kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "ctr", "runc", "coredns", "crictl"]
CNI_PLUGINS = ("bridge", "host-local", "loopback")


class MissingToolchainError(DevenvError):
    """Go is needed to build the binaries and is not installed."""


def cache_dir() -> Path:
    return Path(os.environ.get("HEALTHNAV_CACHE", Path.home() / ".cache" / "healthnav"))


def versions() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in VERSIONS_FILE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


def binary_path(name: str) -> Path:
    version = versions()[BINARIES[name][0]]
    return cache_dir() / "bin" / f"{name}-{version}" / name


def cni_bin_dir() -> Path:
    """The CNI reference plugins (bridge, host-local, loopback) the real node's pods use."""
    return cache_dir() / "bin" / f"cni-plugins-{versions()['CNI_PLUGINS_VERSION']}"


def _build(targets: list[str], what: str) -> None:
    if shutil.which("go") is None:
        raise MissingToolchainError(
            f"Go 1.26+ is needed to build {what}; install it from https://go.dev/dl and re-run."
        )
    subprocess.run(["bash", str(BUILD_SCRIPT), *targets], check=True)


def ensure_binaries(names: list[str] | None = None) -> dict[str, Path]:
    """Paths of the requested binaries, building any that are not cached yet."""
    wanted = names or CONTROL_PLANE
    missing = [n for n in wanted if not os.access(binary_path(n), os.X_OK)]
    if missing:
        _build(
            sorted({BINARIES[n][1] for n in missing}), f"the local cluster's binaries ({', '.join(missing)})"
        )
    return {n: binary_path(n) for n in wanted}


def ensure_cni_plugins() -> Path:
    """The CNI plugin directory, building the plugins when they are not cached yet."""
    directory = cni_bin_dir()
    if not all(os.access(directory / p, os.X_OK) for p in CNI_PLUGINS):
        _build(["cni"], "the CNI plugins")
    return directory

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

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "versions.env"
BUILD_SCRIPT = HERE / "build-binaries.sh"

# binary name -> key in versions.env
BINARY_VERSION_KEYS = {
    "etcd": "ETCD_VERSION",
    "kube-apiserver": "KUBERNETES_VERSION",
    "kube-controller-manager": "KUBERNETES_VERSION",
    "kube-scheduler": "KUBERNETES_VERSION",
    "kubectl": "KUBERNETES_VERSION",
    "kwok": "KWOK_VERSION",
    "helm": "HELM_VERSION",
}


class MissingToolchainError(RuntimeError):
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
    version = versions()[BINARY_VERSION_KEYS[name]]
    return cache_dir() / "bin" / f"{name}-{version}" / name


def ensure_binaries(names: list[str] | None = None) -> dict[str, Path]:
    """Paths of the requested binaries, building any that are not cached yet."""
    wanted = names or list(BINARY_VERSION_KEYS)
    missing = [n for n in wanted if not os.access(binary_path(n), os.X_OK)]
    if missing:
        if shutil.which("go") is None:
            raise MissingToolchainError(
                "Go 1.26+ is needed to build the local control plane's binaries "
                f"({', '.join(missing)}); install it from https://go.dev/dl and re-run."
            )
        groups = sorted({"kubernetes" if n.startswith("kube") else n for n in missing})
        subprocess.run(["bash", str(BUILD_SCRIPT), *groups], check=True)
    return {n: binary_path(n) for n in wanted}

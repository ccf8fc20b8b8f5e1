"""The local cluster's networks, built so that nothing leaves this machine.

Two address ranges matter:

* **The real node's pod network** (``10.89.0.0/24`` on the bridge ``hnav0``): pods of the real
  kubelet get addresses there through the CNI bridge plugin, and the bridge's own address
  (``10.89.0.1``) is where the host serves them - the API server, the S3 server and the cluster
  DNS listen on it. Pods get routes to that subnet and to the Service range only, never a
  default route, so a pod that dials the internet fails inside its own network namespace. Packets
  received on the bridge may be forwarded (``net.ipv4.conf.hnav0.forwarding``: a Service's
  ClusterIP DNAT-ed to another pod on the same bridge is routed, not bridged) but an nftables
  guard drops anything forwarded between the bridge and any other interface. The host's global
  ``ip_forward`` is never touched.
* **kwok's simulated addresses** (pods ``10.244.0.0/16``, nodes ``10.245.0.10``): nothing runs
  there, yet the API server dials them for ``kubectl logs``/``exec`` or a Service proxy. An
  ``unreachable`` route for ``10.244.0.0/15`` makes such a dial fail at once on this machine
  instead of leaving through the default gateway.

Everything added here is removed by :func:`NodeNetwork.down` / :func:`FakeAddressRoutes.remove`;
``hnav dev cluster down`` checks that no bridge, veth, route or nftables table is left. Changing
routes, links and nftables needs root (CAP_NET_ADMIN).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from healthnav.devenv import processes
from healthnav.devenv.errors import DevenvError

BRIDGE = "hnav0"
NODE_SUBNET = "10.89.0.0/24"
NODE_IP = "10.89.0.1"
NODE_PREFIX = 24
SERVICE_CIDR = "10.96.0.0/16"
FAKE_POD_CIDR = "10.244.0.0/16"
FAKE_NODE_IP = "10.245.0.10"
FAKE_RANGE = "10.244.0.0/15"
"""kwok's pod and node addresses: routed ``unreachable`` while a local cluster runs."""
NFT_TABLE = "healthnav"
RUN_DIR = Path("/run/healthnav")


class NetworkError(DevenvError):
    """A network change failed; the message names the command and what it printed."""


def _run(args: list[str], *, check: bool = True, input_text: str | None = None) -> str:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, input=input_text, timeout=30)
    except FileNotFoundError as exc:
        raise NetworkError(
            f"{args[0]} is not installed ({exc}); on Debian: apt-get install iproute2 nftables"
        ) from exc
    if check and proc.returncode != 0:
        raise NetworkError(f"{' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def can_admin_network() -> bool:
    """Whether this process may change links, routes and nftables (root, or CAP_NET_ADMIN)."""
    if os.geteuid() == 0:
        return True
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 12))
    return False


# --- pure renderers --------------------------------------------------------------------------------


def forward_guard_ruleset(bridge: str = BRIDGE) -> str:
    """nftables: nothing is forwarded between the pod bridge and any other interface.

    Pod-to-pod traffic through a Service stays on the bridge and passes; a pod's packet headed
    anywhere else (it has no default route, but a pod could add one) is dropped and counted.
    """
    return (
        f"table inet {NFT_TABLE} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy accept;\n"
        f'    iifname "{bridge}" oifname != "{bridge}" counter drop comment "pods never leave the machine"\n'
        f'    iifname != "{bridge}" oifname "{bridge}" counter drop comment "nothing outside reaches pods"\n'
        "  }\n"
        "}\n"
    )


def cni_conflist(bridge: str = BRIDGE, ipam_dir: Path | None = None) -> dict[str, object]:
    """The CNI network of the real node: a bridge with host-local IPAM and no default route.

    (containerd's CRI sets up each pod's loopback itself, with the ``loopback`` plugin.)
    """
    ipam: dict[str, object] = {
        "type": "host-local",
        "ranges": [[{"subnet": NODE_SUBNET, "gateway": NODE_IP}]],
        # Routes to the node subnet and the Service range only: no default route, so no packet
        # from a pod can be sent towards the internet.
        "routes": [{"dst": NODE_SUBNET}, {"dst": SERVICE_CIDR}],
    }
    if ipam_dir is not None:
        ipam["dataDir"] = str(ipam_dir)
    return {
        "cniVersion": "1.0.0",
        "name": "healthnav",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": ipam,
            }
        ],
    }


# --- the real node's bridge --------------------------------------------------------------------


@dataclass(frozen=True)
class NodeNetwork:
    """The bridge, its forwarding setting and the nftables guard of the real node."""

    bridge: str = BRIDGE

    def exists(self) -> bool:
        return Path(f"/sys/class/net/{self.bridge}").exists()

    def up(self) -> NodeNetwork:
        """Create the bridge with the node address (idempotent) and install the guard."""
        if not can_admin_network():
            raise NetworkError(
                "the real node's pod network needs root (CAP_NET_ADMIN) to create the bridge "
                f"{self.bridge}: run `hnav dev cluster up --real-node` as root"
            )
        if not self.exists():
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        addresses = _run(["ip", "-o", "-4", "addr", "show", "dev", self.bridge])
        if f"{NODE_IP}/{NODE_PREFIX}" not in addresses:
            _run(["ip", "addr", "add", f"{NODE_IP}/{NODE_PREFIX}", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        Path(f"/proc/sys/net/ipv4/conf/{self.bridge}/forwarding").write_text("1\n")
        _run(["nft", "delete", "table", "inet", NFT_TABLE], check=False)
        _run(["nft", "-f", "-"], input_text=forward_guard_ruleset(self.bridge))
        return self

    def veths(self) -> list[str]:
        """Host ends of pod veths still attached to the bridge."""
        if not self.exists():
            return []
        out = _run(["ip", "-o", "link", "show", "master", self.bridge], check=False)
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]

    def down(self) -> None:
        """Remove the veths left on the bridge, the bridge and the guard (idempotent)."""
        for veth in self.veths():
            _run(["ip", "link", "delete", veth], check=False)
        if self.exists():
            _run(["ip", "link", "delete", self.bridge], check=False)
        _run(["nft", "delete", "table", "inet", NFT_TABLE], check=False)

    @staticmethod
    def guard_drops() -> int:
        """Packets the guard dropped since it was installed (a test asserts 0)."""
        out = _run(["nft", "-j", "list", "table", "inet", NFT_TABLE], check=False)
        total = 0
        with contextlib.suppress(ValueError):
            for item in json.loads(out or "{}").get("nftables", []):
                for expr in (item.get("rule") or {}).get("expr", []):
                    total += int((expr.get("counter") or {}).get("packets", 0))
        return total


# --- kwok's simulated addresses ---------------------------------------------------------------------


@dataclass(frozen=True)
class FakeAddressRoutes:
    """The ``unreachable`` route for kwok's addresses, shared by every local cluster running.

    Each cluster that relies on it leaves a claim file (its API server's pid) under
    ``/run/healthnav/fake-routes``; the route goes when the last live claim goes.
    """

    owner: str
    claims: Path = RUN_DIR / "fake-routes"

    def _claim(self) -> Path:
        return self.claims / self.owner.replace("/", "_")

    def add(self, pid: int) -> bool:
        """Claim and install the route; False when this process may not change routes."""
        if not can_admin_network():
            return False
        self.claims.mkdir(parents=True, exist_ok=True)
        self._claim().write_text(str(pid))
        _run(["ip", "route", "replace", "unreachable", FAKE_RANGE])
        return True

    def remove(self) -> None:
        self._claim().unlink(missing_ok=True)
        live = []
        if self.claims.is_dir():
            for claim in self.claims.iterdir():
                with contextlib.suppress(ValueError, OSError):
                    if processes.alive(int(claim.read_text())):
                        live.append(claim)
                        continue
                claim.unlink(missing_ok=True)
        if not live and can_admin_network():
            _run(["ip", "route", "del", "unreachable", FAKE_RANGE], check=False)

    @staticmethod
    def installed() -> bool:
        return "unreachable" in _run(["ip", "route", "show", FAKE_RANGE], check=False)


# --- one real node per machine ------------------------------------------------------------------------

_REAL_NODE_CLAIM = RUN_DIR / "real-node"


def _owner_alive(owner: str) -> bool:
    """Whether the cluster in state dir ``owner`` still runs a node process (containerd, kubelet…)."""
    state = Path(owner, "node", "state.json")
    with contextlib.suppress(OSError, ValueError):
        pids = json.loads(state.read_text()).get("pids", {})
        return any(processes.alive(int(p)) for p in pids.values())
    return False


def claim_real_node(owner: str) -> str | None:
    """Claim the machine's real node for the cluster in ``owner``; the other live owner if taken.

    The pod bridge, kube-proxy's nftables tables and the Service range are machine-wide, so one
    local cluster at a time runs a real node.
    """
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    current = _REAL_NODE_CLAIM.read_text().strip() if _REAL_NODE_CLAIM.exists() else ""
    if current and current != owner and _owner_alive(current):
        return current
    _REAL_NODE_CLAIM.write_text(owner)
    return None


def release_real_node(owner: str) -> None:
    with contextlib.suppress(OSError):
        if _REAL_NODE_CLAIM.read_text().strip() == owner:
            _REAL_NODE_CLAIM.unlink()

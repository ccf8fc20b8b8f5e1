"""A real node comes up, runs a pod for real, and `down` leaves nothing on the machine.

This module starts and stops its own cluster (the session's one starts after it: one real node
runs per machine), so the "nothing left" check compares the machine against how it was before.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from healthnav.devenv import images as local_images
from healthnav.devenv import network, processes
from healthnav.devenv.cluster import LocalCluster, kubectl_path
from healthnav.devenv.node import NODE_NAME, REAL_NODE_LABEL

from .probes import probe_pod

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _machine() -> dict[str, object]:
    """What a cluster could leave behind: links, routes, nftables rules, mounts under our dirs."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return {
        "links": sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()),
        # The fake-address guard route is shared, reference-counted by every local cluster on the
        # machine (another test's may hold it): its own lifecycle is tested with FakeAddressRoutes.
        "routes": sorted(
            r for r in routes.splitlines() if not r.startswith(f"unreachable {network.FAKE_RANGE}")
        ),
        "nft": ruleset,
        "mounts": sorted(mounts),
        "netns": sorted(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else [],
    }


def _kubectl(cluster: LocalCluster, *args: str, input_text: str | None = None) -> str:
    proc = subprocess.run(
        [kubectl_path(), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        input=input_text,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_real_node_runs_a_pod_and_down_leaves_nothing_behind(tmp_path: Path) -> None:
    before = _machine()
    python = local_images.ensure_images([local_images.PYTHON])[0]
    cluster = LocalCluster(f"e2e-life-{os.getpid()}", tmp_path, tie_to_parent=True, real_node=True)
    try:
        cluster.up(timeout=300, images=[local_images.PYTHON])
        node = json.loads(_kubectl(cluster, "get", "node", NODE_NAME, "-o", "json"))
        assert node["metadata"]["labels"][REAL_NODE_LABEL] == "true"
        info = node["status"]["nodeInfo"]
        assert info["containerRuntimeVersion"] == "containerd://2.4.2"
        assert info["kubeletVersion"] == "v1.36.3"
        assert any(python.ref in (i.get("names") or []) for i in node["status"]["images"])
        # kwok still plays the GPU nodes beside it.
        nodes = json.loads(_kubectl(cluster, "get", "nodes", "-o", "json"))["items"]
        assert any(n["status"]["allocatable"].get("nvidia.com/gpu") == "4" for n in nodes)

        cluster_api = cluster.api_client()
        from kubernetes import client

        core = client.CoreV1Api(cluster_api)
        core.create_namespaced_pod("default", probe_pod("probe", "default", python.ref))
        deadline = time.monotonic() + 120
        while core.read_namespaced_pod("probe", "default").status.phase not in ("Succeeded", "Failed"):
            assert time.monotonic() < deadline, "the probe pod did not finish in 120 s"
            time.sleep(0.5)
        pod = core.read_namespaced_pod("probe", "default")
        logs = _kubectl(cluster, "logs", "probe")  # the API server reaches the kubelet by InternalIP
        assert pod.status.phase == "Succeeded", logs
        assert pod.spec.node_name == NODE_NAME
        assert pod.status.pod_ip.startswith("10.89.0.")
        found = json.loads(logs.strip().splitlines()[-1])
        assert found["default_route"] is False
        assert f"nameserver {network.NODE_IP}" in found["resolv"]
        assert found["kubernetes_dns"] == "10.96.0.1"
        assert found["apiserver_via_clusterip"] is True
        assert found["outside_name"].startswith("not resolved")
        ports = [*cluster._load_state().ports.values(), *cluster.node._load().ports.values()]
    finally:
        cluster.down()
    assert cluster.node.leftovers() == []
    after = _machine()
    for key in before:
        assert after[key] == before[key], f"{key} changed: before {before[key]!r}, after {after[key]!r}"
    for port in ports:
        assert not processes.port_open(port) and not processes.port_open(port, network.NODE_IP)


STARTER = """
import sys, time
from pathlib import Path
from healthnav.devenv import images
from healthnav.devenv.cluster import LocalCluster

cluster = LocalCluster(sys.argv[1], Path(sys.argv[2]), tie_to_parent=True, real_node=True)
cluster.up(timeout=300, images=[images.PYTHON])
print("up", flush=True)
time.sleep(3600)
"""


def test_down_after_the_starting_process_died_leaves_no_pod_running(tmp_path: Path) -> None:
    """A test or demo killed mid-run (SIGKILL, OOM): the kernel's parent-death signal stops the
    node's services and containerd's shims with it, but the pods' own processes live on, parented
    to init, in the node's cgroups. ``down`` must find and stop them there."""
    python = local_images.ensure_images([local_images.PYTHON])[0]
    name = f"e2e-orphan-{os.getpid()}"
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, name, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    cluster = LocalCluster(name, tmp_path, real_node=True)
    try:
        assert starter.stdout is not None and starter.stdout.readline().strip() == "up"
        sleeper = probe_pod("sleeper", "default", python.ref)
        sleeper["spec"]["containers"][0]["args"] = ["-c", "import time; time.sleep(3600)"]
        _kubectl(cluster, "apply", "-f", "-", input_text=json.dumps(sleeper))
        deadline = time.monotonic() + 120
        while _kubectl(cluster, "get", "pod", "sleeper", "-o", "jsonpath={.status.phase}") != "Running":
            assert time.monotonic() < deadline, "the sleeper pod did not start in 120 s"
            time.sleep(0.5)
        starter.send_signal(signal.SIGKILL)
        starter.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(processes.alive(p) for p in cluster.node._load().pids.values()):
            assert time.monotonic() < deadline, "the node's services outlived their parent by 30 s"
            time.sleep(0.2)
    finally:
        if starter.poll() is None:
            starter.kill()
        cluster.down()
    assert cluster.node.leftovers() == []

"""The real node's configuration builders (healthnav.devenv.node / .network): pure, no processes.

These pin what keeps the local node on this machine and off every registry: pods get no default
route, the cluster DNS never forwards, containerd never pulls, and each setting the host needs
(cgroup v1, no CAP_SYS_RESOURCE) is there. The e2e tests run the same configs for real.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from healthnav.devenv import network, node

pytestmark = pytest.mark.unit


@pytest.fixture
def paths(tmp_path: Path) -> node.NodePaths:
    return node.NodePaths.for_cluster(tmp_path / "cluster")


@pytest.fixture
def ports() -> node.KubeletEndpoints:
    return node.KubeletEndpoints(10250, 10248, 10256, 10249, 8080)


def test_containerd_config_is_valid_toml_pinned_to_local_images_and_our_runc(paths: node.NodePaths) -> None:
    doc = tomllib.loads(node.render_toml(node.containerd_config(paths, "localhost/healthnav/pause:1.0")))
    images = doc["plugins"]["io.containerd.cri.v1.images"]
    runtime = doc["plugins"]["io.containerd.cri.v1.runtime"]
    assert images["pinned_images"]["sandbox"] == "localhost/healthnav/pause:1.0"
    assert images["registry"]["config_path"] == str(paths.registry_hosts_dir)
    assert runtime["restrict_oom_score_adj"] is True  # no CAP_SYS_RESOURCE on the host
    assert runtime["netns_mounts_under_state_dir"] is True  # nothing under /var/run/netns
    runc = runtime["containerd"]["runtimes"]["runc"]["options"]
    assert runc["BinaryName"].endswith("/runc") and runc["SystemdCgroup"] is False
    assert doc["grpc"]["address"] == str(paths.containerd_socket)
    assert len(str(paths.containerd_socket)) < 100  # unix socket path limit
    assert doc["plugins"]["io.containerd.nri.v1.nri"]["disable"] is True
    assert doc["imports"] == []  # never /etc/containerd/conf.d


def test_every_registry_resolves_to_a_closed_loopback_port() -> None:
    hosts = tomllib.loads(node.registry_hosts_toml())
    assert hosts["server"].startswith("http://127.0.0.1:")
    assert list(hosts["host"]) == [hosts["server"]]


def test_pods_get_no_default_route_and_no_masquerade() -> None:
    conf = network.cni_conflist()
    (bridge,) = conf["plugins"]  # type: ignore[misc]
    assert bridge["type"] == "bridge" and bridge["isDefaultGateway"] is False and bridge["ipMasq"] is False
    routes = {r["dst"] for r in bridge["ipam"]["routes"]}
    assert routes == {network.NODE_SUBNET, network.SERVICE_CIDR}
    assert "0.0.0.0/0" not in routes


def test_forward_guard_drops_everything_between_the_bridge_and_other_interfaces() -> None:
    rules = network.forward_guard_ruleset("hnav0")
    assert 'iifname "hnav0" oifname != "hnav0" counter drop' in rules
    assert 'iifname != "hnav0" oifname "hnav0" counter drop' in rules
    assert "hook forward" in rules


def test_cluster_dns_answers_cluster_local_and_forwards_nothing(ports: node.KubeletEndpoints) -> None:
    corefile = node.corefile(Path("/x/coredns.kubeconfig"), ports)
    assert "forward" not in corefile and "proxy" not in corefile
    assert "rcode NXDOMAIN" in corefile
    assert f"bind {network.NODE_IP}" in corefile
    assert "kubernetes cluster.local" in corefile


def test_kubelet_config_for_a_cgroup_v1_host_without_iptables_side_effects(
    paths: node.NodePaths, ports: node.KubeletEndpoints, tmp_path: Path
) -> None:
    cfg = node.kubelet_config(paths, tmp_path / "pki", ports, "demo")
    assert cfg["failCgroupV1"] is False
    assert cfg["cgroupDriver"] == "cgroupfs" and cfg["cgroupRoot"] == "/healthnav-demo"
    assert cfg["makeIPTablesUtilChains"] is False
    assert cfg["clusterDNS"] == [network.NODE_IP]
    assert cfg["resolvConf"] == str(paths.resolv_conf)  # never the host's resolver
    assert cfg["authentication"]["anonymous"]["enabled"] is False
    assert cfg["readOnlyPort"] == 0
    # Locally built images cannot be pulled back: never garbage-collected.
    assert cfg["imageGCHighThresholdPercent"] == 100


def test_kube_proxy_runs_in_nftables_mode_and_leaves_host_sysctls(ports: node.KubeletEndpoints) -> None:
    cfg = node.kube_proxy_config(Path("/x/kp.kubeconfig"), ports)
    assert cfg["mode"] == "nftables"
    assert cfg["conntrack"]["maxPerCore"] == 0
    assert cfg["healthzBindAddress"].startswith("127.0.0.1:")


def test_node_rbac_binds_each_component_to_least_privilege() -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in node.node_rbac()}
    binding = "ClusterRoleBinding"
    assert objs[binding, "healthnav:kube-proxy"]["roleRef"]["name"] == "system:node-proxier"
    assert objs[binding, "healthnav:apiserver-kubelet"]["roleRef"]["name"] == "system:kubelet-api-admin"
    dns_rules = objs["ClusterRole", "healthnav:coredns"]["rules"]
    assert all(set(r["verbs"]) <= {"list", "watch"} for r in dns_rules)


def test_prerequisites_name_the_fix_for_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node.shutil, "which", lambda tool: None)
    problems = node.missing_prerequisites()
    assert any("apt-get install nftables" in p for p in problems)
    assert any("apt-get install iproute2" in p for p in problems)

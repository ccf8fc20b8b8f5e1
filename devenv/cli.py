"""``hnav dev cluster up|down|status`` and ``hnav dev s3 up|down|status``."""

from __future__ import annotations

import time

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
cluster_app = typer.Typer(
    no_args_is_help=True, help="Local Kubernetes control plane with simulated GPU nodes."
)
s3_app = typer.Typer(no_args_is_help=True, help="Local S3-protocol server.")
app.add_typer(cluster_app, name="cluster")
app.add_typer(s3_app, name="s3")
err = Console(stderr=True)

NAME = typer.Option("default", "--name", help="Run several side by side under different names.")


REAL_NODE = typer.Option(
    False,
    "--real-node",
    help="Also run a real node (containerd + runc + kubelet, label healthnav.dev/real-node=true) with "
    "the project's images loaded, pod networking, cluster DNS and KubeRay's operator. Needs root.",
)


@cluster_app.command("up")
def cluster_up(name: str = NAME, real_node: bool = REAL_NODE) -> None:
    """Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on 127.0.0.1.

    Builds the binaries from their Go modules first if they are not cached (a cold build takes
    several minutes; warm starts take seconds). With --real-node the first run also builds the
    images (``make images``; many minutes cold). The last line printed is the KUBECONFIG export.
    """
    from healthnav.devenv.binaries import MissingToolchainError
    from healthnav.devenv.cluster import ClusterError, LocalCluster
    from healthnav.devenv.network import NetworkError
    from healthnav.devenv.node import NodeError

    started = time.monotonic()
    cluster = LocalCluster(name, real_node=real_node)
    try:
        with err.status("starting the local cluster..."):
            cluster.up()
    except (ClusterError, MissingToolchainError, NetworkError, NodeError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    err.print(f"control plane [bold]{name}[/bold] ready in {time.monotonic() - started:.1f} s")
    print(f"export KUBECONFIG={cluster.kubeconfig}")


@cluster_app.command("down")
def cluster_down(name: str = NAME) -> None:
    """Stop every component and delete the cluster's data."""
    from healthnav.devenv.cluster import LocalCluster

    LocalCluster(name).down()
    err.print(f"control plane [bold]{name}[/bold] stopped")


@cluster_app.command("status")
def cluster_status(name: str = NAME) -> None:
    """Which components run, their ports, and the kubeconfig path."""
    from healthnav.devenv.cluster import LocalCluster

    status = LocalCluster(name).status()
    table = Table("component", "running")
    for component, alive in status["components"].items():
        table.add_row(component, "[green]yes[/green]" if alive else "[red]no[/red]")
    err.print(table)
    err.print(f"API server ready: {status['ready']}  ports: {status['ports']}")
    print(f"export KUBECONFIG={status['kubeconfig']}")
    if not status["ready"]:
        raise typer.Exit(1)


@s3_app.command("up")
def s3_up(
    name: str = NAME,
    for_pods: bool = typer.Option(
        False, "--for-pods", help="Listen on the real node's bridge address so pods reach it too."
    ),
) -> None:
    """Start the S3 server; prints the AWS_* exports that point boto3 (and healthnav) at it."""
    from healthnav.devenv.network import NODE_IP
    from healthnav.devenv.s3 import LocalS3

    s3 = LocalS3(name, host=NODE_IP if for_pods else "127.0.0.1").up()
    err.print(f"S3 server on {s3.endpoint}")
    for key, value in s3.env.items():
        print(f"export {key}={value}")


@s3_app.command("down")
def s3_down(name: str = NAME) -> None:
    """Stop the S3 server (its objects are discarded)."""
    from healthnav.devenv.s3 import LocalS3

    LocalS3(name).down()
    err.print("S3 server stopped")


@s3_app.command("status")
def s3_status(name: str = NAME) -> None:
    """Whether the S3 server runs, and its exports."""
    from healthnav.devenv.s3 import LocalS3

    s3 = LocalS3(name)
    if not s3.running():
        err.print("S3 server is not running")
        raise typer.Exit(1)
    for key, value in s3.env.items():
        print(f"export {key}={value}")

"""``hnav operator run`` and ``hnav operator crds``."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)
log = logging.getLogger("healthnav.operator")

DEFAULT_CRD_DIR = Path("charts/healthnav/crds")


_EXACT_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
"""A namespace name (RFC 1123 label); anything else (globs, ``!negations``, commas) is a pattern."""


def exact_namespaces(patterns: Sequence[str]) -> bool:
    """True when every ``--namespace`` is a literal name, so kopf needs no namespace listing."""
    return bool(patterns) and all(_EXACT_NAMESPACE.match(p) for p in patterns)


def namespace_scanning_needed(
    patterns: Sequence[str], all_namespaces: bool, can_list_namespaces: Callable[[], bool]
) -> bool:
    """Whether kopf should scan (list and watch) namespaces and CRDs at start-up and after.

    Scanning resolves namespace globs and notices CRDs installed later (KubeRay after the
    operator). Without cluster-wide permission (the chart's ``rbac.scope=namespace``) kopf's
    namespace listing is refused and retried with back-off for about 54 s before it falls back
    to the literal names, so every start of a namespace-scoped operator would stall a minute.
    With literal names there is nothing to resolve: scanning is then only kept where the
    identity may list and watch namespaces (cluster-scope RBAC, which also grants the CRD watch).
    If that cannot be determined, scanning is off: literal names work without it.
    """
    if all_namespaces or not exact_namespaces(patterns):
        return True
    try:
        return can_list_namespaces()
    except Exception as exc:  # the API server unreachable or the review refused
        log.warning("cannot tell whether namespaces may be listed (%s); not scanning them", exc)
        return False


def _can_list_namespaces() -> bool:
    from healthnav.operator.kube import Kube

    kube = Kube.from_environment(max_workers=1)
    try:
        return kube.can_i("list", "namespaces") and kube.can_i("watch", "namespaces")
    finally:
        kube.close()


@app.command("run")
def run_command(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Namespace (or glob pattern) to watch; repeat for several."),
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Watch every namespace (cluster-wide RBAC).")
    ] = False,
    peering: Annotated[
        str | None,
        typer.Option(help="kopf peering name: replicas with the same name elect one active operator."),
    ] = None,
    standalone: Annotated[bool, typer.Option(help="Do not coordinate with other replicas.")] = False,
    priority: Annotated[int, typer.Option(help="Peering priority; the highest active replica works.")] = 0,
    liveness: Annotated[
        str, typer.Option(help="Liveness endpoint URL ('' to disable).")
    ] = "http://0.0.0.0:8080/healthz",
    metrics_port: Annotated[int, typer.Option(help="Prometheus /metrics port (0 to disable).")] = 9090,
    metrics_address: Annotated[str, typer.Option(help="Address the metrics server binds to.")] = "0.0.0.0",
    log_format: Annotated[str, typer.Option(help="json | plain | full")] = "json",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the kopf operator reconciling FineTuneJob (and ModelServe, when installed)."""
    import kopf

    if not namespace and not all_namespaces:
        raise typer.BadParameter(
            "give --namespace NS (repeatable) or --all-namespaces", param_hint="--namespace"
        )
    if namespace and all_namespaces:
        raise typer.BadParameter(
            "--namespace and --all-namespaces are exclusive", param_hint="--all-namespaces"
        )
    formats = {"json": kopf.LogFormat.JSON, "plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL}
    if log_format not in formats:
        raise typer.BadParameter(f"one of {', '.join(formats)}", param_hint="--log-format")
    kopf.configure(verbose=verbose, log_format=formats[log_format])
    if not verbose:
        # kopf logs every successful event handler at INFO; keep the operator's own messages.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)

    # Registering handlers is an import side effect (kopf's decorators).
    import healthnav.operator.finetunejob_handlers as ftj_handlers
    import healthnav.operator.modelserve_handlers  # noqa: F401

    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_address)

    settings = kopf.OperatorSettings()
    ftj_handlers.configure_watching(settings)
    patterns = list(namespace or ())
    if not namespace_scanning_needed(patterns, all_namespaces, _can_list_namespaces):
        settings.scanning.disabled = True
        log.info("watching exactly %s; no namespace or CRD scanning", ", ".join(patterns))
    kopf.run(
        settings=settings,
        clusterwide=all_namespaces,
        namespaces=namespace or (),
        standalone=standalone or peering is None,
        peering_name=peering,
        priority=priority,
        liveness_endpoint=liveness or None,
    )


@app.command("crds")
def crds_command(
    out: Annotated[Path, typer.Option(help="Directory for the generated CRD YAML files.")] = DEFAULT_CRD_DIR,
    check: Annotated[
        bool, typer.Option(help="Exit 1 if the files differ from a fresh generation (for CI).")
    ] = False,
) -> None:
    """Generate the CRD YAML from the pydantic models (one source of truth)."""
    from healthnav.operator.crdgen import render_crd_yaml, write_crds
    from healthnav.operator.crds import all_crds

    specs = all_crds()
    if check:
        stale = [
            s.filename
            for s in specs
            if not (out / s.filename).exists() or (out / s.filename).read_text() != render_crd_yaml(s)
        ]
        if stale:
            typer.echo(f"out of date: {', '.join(stale)}; run `hnav operator crds`", err=True)
            raise typer.Exit(code=1)
        return
    for path in write_crds(specs, out):
        typer.echo(str(path))

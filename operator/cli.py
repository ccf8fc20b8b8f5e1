"""``hnav operator run``, ``hnav operator crds`` and ``hnav plan``."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)
log = logging.getLogger("healthnav.operator")

DEFAULT_CRD_DIR = Path("charts/healthnav/crds")


def plan_command(
    assessments_per_month: Annotated[
        int | None,
        typer.Option(min=1, help="Monthly assessment volume to size for (omit: only the roadmap table)."),
    ] = None,
    peak_factor: Annotated[float, typer.Option(min=1.0, help="Busiest hour / business-hours average.")] = 3.0,
    tokens_in: Annotated[int, typer.Option(min=0, help="Prompt tokens per assessment.")] = 1000,
    tokens_out: Annotated[int, typer.Option(min=1, help="Generated tokens per assessment.")] = 400,
    gpu_type: Annotated[
        str, typer.Option(help="GPU profile: nvidia-l4, nvidia-a10g, nvidia-tesla-a100, nvidia-h100-80gb.")
    ] = "nvidia-l4",
    gpu_price_per_hour: Annotated[
        float | None, typer.Option(min=0.0, help="USD per GPU-hour (default: the profile's list price).")
    ] = None,
    gpus_per_replica: Annotated[int, typer.Option(min=1, max=8, help="GPUs per model replica.")] = 1,
    decode_tps: Annotated[
        float | None,
        typer.Option(min=0.001, help="Aggregate output tokens/s per replica (default: profile)."),
    ] = None,
    prefill_tps: Annotated[
        float | None, typer.Option(min=0.001, help="Prompt tokens/s per replica (default: profile).")
    ] = None,
    stream_tps: Annotated[
        float | None, typer.Option(min=0.001, help="Output tokens/s one request sees (default: profile).")
    ] = None,
    api_price_in: Annotated[float, typer.Option(min=0.0, help="API USD per million prompt tokens.")] = 5.0,
    api_price_out: Annotated[
        float, typer.Option(min=0.0, help="API USD per million generated tokens.")
    ] = 15.0,
    business_hours: Annotated[
        float, typer.Option(min=0.5, max=24.0, help="Hours a day with traffic.")
    ] = 12.0,
    business_days: Annotated[
        float, typer.Option(min=1.0, max=31.0, help="Days a month with traffic.")
    ] = 22.0,
    target_utilization: Annotated[
        float, typer.Option(min=0.05, max=1.0, help="Share of replica throughput to plan for.")
    ] = 0.6,
    business_hours_only: Annotated[
        bool, typer.Option(help="Scale to zero outside business hours (cold starts take minutes).")
    ] = False,
    head_price_per_hour: Annotated[
        float, typer.Option(min=0.0, help="USD per hour of the Ray head pod.")
    ] = 0.10,
    name: Annotated[str, typer.Option(help="metadata.name of the generated ModelServe.")] = "triage",
    base_model: Annotated[str, typer.Option(help="spec.baseModel.uri of the generated ModelServe.")] = (
        "s3://models/biomistral-7b/"
    ),
    manifest_out: Annotated[
        Path | None, typer.Option("--manifest", help="Write the ModelServe YAML here instead of printing it.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan(s) as JSON.")] = False,
) -> None:
    """Size a ModelServe for a monthly assessment volume: replicas, autoscaling, cost, break-even.

    Prices and throughputs are inputs with documented defaults (see healthnav.operator.planner).
    """
    import dataclasses
    import json

    import yaml
    from rich.console import Console
    from rich.table import Table

    from healthnav.operator import planner

    if gpu_type not in planner.GPU_PROFILES:
        raise typer.BadParameter(f"one of {', '.join(planner.GPU_PROFILES)}", param_hint="--gpu-type")
    profile = planner.GPU_PROFILES[gpu_type]
    overrides = {
        "price_per_hour": gpu_price_per_hour,
        "decode_tps": decode_tps,
        "prefill_tps": prefill_tps,
        "stream_tps": stream_tps,
    }
    profile = dataclasses.replace(
        profile, gpus_per_replica=gpus_per_replica, **{k: v for k, v in overrides.items() if v is not None}
    )
    try:
        base = planner.PlanInputs(
            assessments_per_month=assessments_per_month or 0,
            peak_factor=peak_factor,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            gpu=profile,
            api_price_in_per_m=api_price_in,
            api_price_out_per_m=api_price_out,
            business_hours_per_day=business_hours,
            business_days_per_month=business_days,
            target_utilization=target_utilization,
            always_on=not business_hours_only,
            head_price_per_hour=head_price_per_hour,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc

    table_plans = planner.scenarios(base)
    chosen = planner.plan(base) if assessments_per_month else None
    if chosen and assessments_per_month not in planner.ROADMAP_SCENARIOS:
        table_plans = sorted([*table_plans, chosen], key=lambda p: p.inputs.assessments_per_month)
    doc = planner.manifest(chosen, name=name, base_model=base_model) if chosen else None

    if as_json:
        out = {"scenarios": [p.to_dict() for p in table_plans]}
        if chosen:
            out["plan"] = chosen.to_dict()
            out["manifest"] = doc
        typer.echo(json.dumps(out, indent=2, default=str))
        if manifest_out and doc:
            manifest_out.write_text(yaml.safe_dump(doc, sort_keys=False))
        return

    console = Console(width=max(Console().width, 110))  # a piped table stays readable
    table = Table(
        title=f"ModelServe sizing on {profile.gpu_type} (${profile.price_per_hour:.2f}/GPU-h) vs API "
        f"(${api_price_in:g}/${api_price_out:g} per M tokens in/out)"
    )
    # Short headers: the table must fit an 80-column terminal.
    for col in (
        "N/month",
        "peak rps",
        "replicas",
        "GPU-h",
        "$/month",
        "$/query",
        "API $/mo",
        "API $/q",
        "saved $",
    ):
        table.add_column(col, justify="right")
    for p in table_plans:
        table.add_row(
            f"{p.inputs.assessments_per_month:,}",
            f"{p.peak_rps:.3f}",
            f"{p.min_replicas}/{p.busy_replicas}/{p.max_replicas}",
            f"{p.gpu_hours:,.0f}",
            f"{p.monthly_cost:,.0f}",
            f"{p.cost_per_query:.4f}",
            f"{p.api_monthly_cost:,.0f}",
            f"{p.api_cost_per_query:.4f}",
            f"{p.savings:,.0f}",
        )
    console.print(table)
    console.print("replicas = min/busy/max: always on / average in business hours / autoscaling ceiling")
    be = table_plans[0].break_even_assessments
    console.print(
        f"Break-even against the API: {be:,} assessments/month"
        if be
        else "Self-hosting never breaks even here."
    )
    if chosen and doc:
        console.print(
            f"Per replica: {chosen.capacity_rps_per_replica:.3f} req/s at {target_utilization:.0%} load, "
            f"~{chosen.latency_s:.1f} s per assessment; "
            f"targetOngoingRequests {chosen.target_ongoing_requests}."
        )
        text = yaml.safe_dump(doc, sort_keys=False)
        if manifest_out:
            manifest_out.write_text(text)
            console.print(f"ModelServe written to {manifest_out}")
        else:
            typer.echo(text)


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

    with contextlib.suppress(ImportError):
        import healthnav.operator.modelserve_handlers  # type: ignore[import-not-found]  # noqa: F401

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
    from healthnav.operator.crdgen import all_crds, render_crd_yaml, write_crds

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

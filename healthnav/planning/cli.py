"""``hnav plan``: size a ModelServe for a monthly assessment volume (replicas, cost, break-even).

Only typer is imported at module level (``hnav --help`` loads this file); the arithmetic is in
:mod:`healthnav.planning.capacity`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


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
        bool,
        typer.Option(
            help="Replicas only in the business-hours window (autoscaling.schedule), zero outside; "
            "off-hours assessments go to the spillover upstream."
        ),
    ] = False,
    off_hours_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.99,
            help="Share of assessments outside business hours (answered by the spillover upstream "
            "when the GPUs sleep).",
        ),
    ] = 0.05,
    cold_start_seconds: Annotated[
        float, typer.Option(min=0.0, help="Zero replicas to first token on a fresh GPU node (7B).")
    ] = 180.0,
    spot_discount: Annotated[
        float,
        typer.Option(min=0.0, max=0.95, help="Fraction off the GPU price on spot nodes (0: on demand)."),
    ] = 0.0,
    time_zone: Annotated[str, typer.Option(help="Time zone of the business-hours window.")] = "UTC",
    business_start: Annotated[
        str, typer.Option(help="Local start of the business-hours window, HH:MM.")
    ] = "08:00",
    upstream_base_url: Annotated[
        str, typer.Option(help="Spillover upstream (the paid API) for off-hours assessments.")
    ] = "https://api.openai.com/v1",
    upstream_model: Annotated[str, typer.Option(help="The upstream's model name.")] = "gpt-4o-mini",
    upstream_secret: Annotated[
        str, typer.Option(help="Secret NAME:KEY holding the upstream's API key.")
    ] = "llm-api:api-key",
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

    Prices and throughputs are inputs with documented defaults (see healthnav.planning.capacity).
    """
    import dataclasses
    import json

    import yaml
    from rich.console import Console
    from rich.table import Table

    from healthnav.planning import capacity as planner

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
            spot_discount=spot_discount,
            off_hours_share=off_hours_share,
            cold_start_seconds=cold_start_seconds,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    secret_name, _, secret_key = upstream_secret.partition(":")
    if not secret_name or not secret_key:
        raise typer.BadParameter("NAME:KEY, e.g. llm-api:api-key", param_hint="--upstream-secret")
    upstream = planner.Upstream(upstream_base_url, upstream_model, secret_name, secret_key)

    table_plans = planner.scenarios(base)
    chosen = planner.plan(base) if assessments_per_month else None
    if chosen and assessments_per_month not in planner.ROADMAP_SCENARIOS:
        table_plans = sorted([*table_plans, chosen], key=lambda p: p.inputs.assessments_per_month)
    try:
        doc = (
            planner.manifest(
                chosen,
                name=name,
                base_model=base_model,
                time_zone=time_zone,
                business_start=business_start,
                upstream=upstream,
            )
            if chosen
            else None
        )
    except ValueError as exc:  # the CRD's own model refused a value (time zone, start, URL)
        raise typer.BadParameter(str(exc)) from exc

    volumes = sorted(
        {*planner.ROADMAP_SCENARIOS, *([assessments_per_month] if assessments_per_month else [])}
    )
    compared = [
        o for v in volumes for o in planner.options(dataclasses.replace(base, assessments_per_month=v))
    ]
    if as_json:
        out = {"scenarios": [p.to_dict() for p in table_plans], "options": [o.to_dict() for o in compared]}
        if chosen:
            out["plan"] = chosen.to_dict()
            out["manifest"] = doc
        typer.echo(json.dumps(out, indent=2, default=str))
        if manifest_out and doc:
            manifest_out.write_text(yaml.safe_dump(doc, sort_keys=False))
        return

    console = Console(width=max(Console().width, 110))  # a piped table stays readable
    table = Table(
        title=f"ModelServe sizing on {profile.gpu_type} (${planner.gpu_price(base):.2f}/GPU-h"
        f"{', spot' if spot_discount else ''}) vs API "
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
    if chosen and chosen.spillover_monthly_cost:
        console.print(
            f"$/month includes ${chosen.spillover_monthly_cost:,.0f} of API spillover for the "
            f"{off_hours_share:.0%} of assessments outside business hours."
        )
    opts = Table(title="The same volumes run four ways (off-hours share and cold start as given)")
    for col in ("N/month", "option", "$/month", "$/assessment", "GPU-h", "spilled"):
        opts.add_column(col, justify="left" if col == "option" else "right")
    for o in compared:
        opts.add_row(
            f"{o.assessments_per_month:,}",
            o.name,
            f"{o.monthly_cost:,.0f}",
            f"{o.cost_per_assessment:.4f}",
            f"{o.gpu_hours:,.0f}",
            f"{o.spill_share:.1%}",
        )
    console.print(opts)
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

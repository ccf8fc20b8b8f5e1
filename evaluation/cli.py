"""``hnav eval``: evaluate a fine-tune against its base and the API it replaces, then gate it.

Only typer is imported at module level; torch, transformers and the metric libraries load
inside the command. Exit codes tell automation what happened without parsing output:
0 evaluated and gates passed (or none set), 3 gates failed (the report is still written),
78 bad input (dataset, reference, gates or options; nothing was evaluated), 1 anything else.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from healthnav.contracts.errors import EXIT_CONFIG_ERROR

EXIT_GATES_FAILED = 3


def parse_gates(value: str) -> dict[str, Any]:
    """Gates from inline JSON/YAML or a file (path, file:// or s3://); ``{gates: {...}}`` or bare."""
    import yaml

    text = value
    if not value.lstrip().startswith("{"):
        from healthnav.contracts import storage
        from healthnav.contracts.uris import StorageURI

        try:
            text = storage.read_text(StorageURI.parse_location(value))
        except (storage.StorageError, ValueError) as exc:
            raise ValueError(f"--gates {value}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"--gates: not JSON/YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("--gates: expected a mapping such as {rougeL: 0.3, mcqAccuracy: 0.45}")
    if set(data) == {"gates"}:
        data = data["gates"]
    if isinstance(data.get("evaluation"), dict):  # a FineTuneJob spec excerpt
        data = data["evaluation"].get("gates", {})
    return data


def eval_command(
    dataset: Annotated[str, typer.Option(help="Dataset prefix (s3://, file:// or path) with a test split.")],
    output: Annotated[
        str, typer.Option(help="The fine-tune's output prefix; artifacts go to <output>/eval/.")
    ],
    base_model: Annotated[
        str | None, typer.Option(help="Base model (s3://, file://, directory or hub id) for in-process eval.")
    ] = None,
    adapter: Annotated[
        str | None, typer.Option(help="LoRA adapter prefix; the candidate is base + adapter.")
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="OpenAI-compatible server URL; evaluates the served --model instead.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Served model name of the candidate at --endpoint.")
    ] = None,
    endpoint_base_model: Annotated[
        str | None, typer.Option(help="Served model name of the base model at --endpoint.")
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="JSONL of {prompt, answer} from the API being replaced.")
    ] = None,
    gates: Annotated[
        str | None,
        typer.Option(help="Gates as JSON/YAML or a file, e.g. '{rougeL: 0.3, mcqAccuracy: 0.45}'."),
    ] = None,
    max_examples: Annotated[int | None, typer.Option(help="Evaluate only the first N test records.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Generation budget per answer.")] = 256,
    batch_size: Annotated[
        int,
        typer.Option(help="In-process: answers generated N at a time (faster; latency not measured)."),
    ] = 1,
    timeout: Annotated[float, typer.Option(help="Per-request timeout against --endpoint, seconds.")] = 60.0,
    skip_base: Annotated[
        bool, typer.Option(help="Do not evaluate the base model (no regression gate).")
    ] = False,
    base_from: Annotated[
        str | None,
        typer.Option(help="Reuse the base column of an earlier eval/metrics.json (same dataset, settings)."),
    ] = None,
    embedding_model: Annotated[
        str | None, typer.Option(help="Sentence-transformers directory (default: bundled all-MiniLM-L6-v2).")
    ] = None,
    mcq_scoring: Annotated[
        str, typer.Option(help="Multiple choice: 'loglikelihood' (lm-eval-harness) or 'generated' letter.")
    ] = "loglikelihood",
    gpu_hourly_usd: Annotated[
        float, typer.Option(help="Serving GPU price per hour, for cost per query.")
    ] = 0.80,
    concurrency: Annotated[
        float, typer.Option(help="Queries served at once per GPU, for cost per query.")
    ] = 1.0,
    api_input_usd_per_million: Annotated[
        float, typer.Option(help="Reference API price per 1M input tokens.")
    ] = 3.0,
    api_output_usd_per_million: Annotated[
        float, typer.Option(help="Reference API price per 1M output tokens.")
    ] = 15.0,
    device: Annotated[
        str | None, typer.Option(help="torch device for in-process eval (default: cuda if any).")
    ] = None,
) -> None:
    """Evaluate a model (and adapter) on a dataset's test split; compare, gate and write the report."""
    import logging

    from pydantic import ValidationError

    from healthnav.contracts.validation import describe_validation_error
    from healthnav.evaluation.pipeline import EvalConfig, EvaluationInputError, run_evaluation

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = EvalConfig.model_validate(
            {
                "dataset": dataset,
                "output": output,
                "baseModel": base_model,
                "adapter": adapter,
                "endpoint": endpoint,
                "model": model,
                "endpointBaseModel": endpoint_base_model,
                "reference": reference,
                "gates": parse_gates(gates) if gates else None,
                "maxExamples": max_examples,
                "maxNewTokens": max_new_tokens,
                "batchSize": batch_size,
                "timeoutSeconds": timeout,
                "skipBase": skip_base,
                "baseFrom": base_from,
                "embeddingModel": embedding_model,
                "device": device,
                "mcqScoring": mcq_scoring,
                "cost": {
                    "gpuHourlyUsd": gpu_hourly_usd,
                    "concurrency": concurrency,
                    "apiInputUsdPerMillion": api_input_usd_per_million,
                    "apiOutputUsdPerMillion": api_output_usd_per_million,
                },
            }
        )
    except ValidationError as exc:
        typer.echo(f"error: invalid options: {describe_validation_error(exc)}", err=True)
        raise typer.Exit(EXIT_CONFIG_ERROR) from exc
    except ValueError as exc:
        typer.echo(f"error: invalid options: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG_ERROR) from exc

    def progress(label: str, done: int, total: int) -> None:
        if done == total or done % 10 == 0:
            typer.echo(f"{label}: {done}/{total}", err=True)

    try:
        outcome = run_evaluation(config, progress=progress)
    except EvaluationInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG_ERROR) from exc
    typer.echo(json.dumps(outcome.to_dict(exclude={"gate": {"checks"}}), indent=2))
    if outcome.partial:
        typer.echo("warning: partial evaluation (some records failed); see the report", err=True)
    if not outcome.passed:
        typer.echo(f"gates FAILED: {outcome.gate.message}", err=True)
        raise typer.Exit(EXIT_GATES_FAILED)

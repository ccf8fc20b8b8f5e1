"""``hnav models list`` and ``hnav models prepare NAME [--output DIR|s3://…]``.

Only typer is imported at module level (``hnav --help`` and the operator load this file).
"""

from __future__ import annotations

import json

import typer

from healthnav.contracts.errors import EXIT_CONFIG_ERROR, EXIT_RETRYABLE

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_command() -> None:
    """The packaged models this install can prepare, and whether their package is installed."""
    from healthnav.models.catalog import CATALOG, ModelNotAvailable, find_gguf

    for model in CATALOG.values():
        try:
            found = find_gguf(model)
            where = f"{model.package} {found.package_version}: {found.path}"
        except ModelNotAvailable as exc:
            where = str(exc)
        typer.echo(f"{model.name}\t{model.license}\t{where}")


@app.command("prepare")
def prepare_command(
    name: str = typer.Argument("smollm2-135m-instruct", help="Packaged model (see `hnav models list`)."),
    output: str | None = typer.Option(
        None, "--output", "-o", help="Also stage it here: a directory, file:///path or s3://bucket/prefix/."
    ),
) -> None:
    """Make a packaged GGUF a Hugging Face directory (cached), optionally staged to a directory or S3.

    Prints one JSON object: the cached path, where it was staged, whether it was converted now,
    and the provenance (package, version, the GGUF's sha256, licence).
    """
    from healthnav.contracts.errors import ConfigurationError
    from healthnav.contracts.storage import StorageError
    from healthnav.models.prepare import prepare

    try:
        prepared = prepare(name, output)
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG_ERROR) from exc
    except StorageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_RETRYABLE) from exc
    p = prepared.provenance
    summary = {
        "model": prepared.name,
        "path": str(prepared.path),
        "stagedTo": prepared.staged_to,
        "converted": prepared.converted,
        "package": f"{p.package}=={p.package_version}",
        "ggufSha256": p.gguf_sha256,
        "license": p.license,
        "parameters": p.parameters,
        "dtype": p.dtype,
    }
    typer.echo(json.dumps(summary, indent=2))

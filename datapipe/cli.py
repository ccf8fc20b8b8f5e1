"""``hnav data …``: build, deidentify, stage, verify, inspect, pubmed.

Only typer is imported at module level (``hnav --help`` stays fast); each command imports the
pipeline it needs. Errors the user can fix exit with code 2 and a one-line reason, never a
traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command("build")
def build_command(
    config: Annotated[Path, typer.Argument(help="Build config YAML (sources and steps).")],
    output: Annotated[
        str | None, typer.Option(help="Override the config's output (dir, file:// or s3://).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset at the output.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Build a dataset: read, de-identify, filter, dedup, decontaminate, split, shard, manifest last."""
    from healthnav.contracts.storage import StorageError
    from healthnav.datapipe.build import BuildError, build_dataset, load_config

    try:
        cfg, base = load_config(config)
        result = build_dataset(cfg, base, output=output, overwrite=overwrite, progress=progress)
    except (BuildError, StorageError, ValueError) as exc:
        _fail(str(exc))
        return
    m = result.manifest
    st = m.stats
    typer.echo(f"built {m.name} {m.version} at {result.uri}")
    typer.echo(f"  records: {json.dumps(m.counts.get('by_split', {}))}")
    typer.echo(f"  bad records: {st['bad_records']['total']}; filtered: {json.dumps(st['filtered'])}")
    typer.echo(f"  dedup: {json.dumps(st['dedup'])}; decontaminated: {st['decontamination']['removed']}")
    deid = st["deidentification"]
    typer.echo(
        f"  de-identification: {deid['records_changed']}/{deid['records_checked']} records changed, "
        f"{json.dumps(deid['replacements_by_type'])}, quarantined {deid['quarantined']}"
    )
    for sample in st["bad_records"]["samples"][:10]:
        typer.echo(f"  bad: {sample['location']}: {sample['error']}", err=True)


@app.command("deidentify")
def deidentify_command(
    file: Annotated[str, typer.Argument(help="Text file, one text per line; '-' for stdin.")] = "-",
    stats: Annotated[bool, typer.Option(help="Print counts by type and residual risks to stderr.")] = False,
    rules_only: Annotated[
        bool, typer.Option(help="Rules only, without the NER pass (misses names and places it never saw).")
    ] = False,
) -> None:
    """Scrub identifiers from each line; the scrubbed lines come out in the same order."""
    from collections import Counter

    from healthnav.datapipe.deid import Deidentifier, NerUnavailable, default_deidentifier
    from healthnav.datapipe.deid.ner import install_hint

    try:
        deid = default_deidentifier() if rules_only else Deidentifier.with_ner()
    except NerUnavailable as exc:
        _fail(f"{exc}; {install_hint()} (or pass --rules-only)")
        return
    try:
        fh = sys.stdin if file == "-" else open(file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        _fail(f"{file}: {exc.strerror}")
        return
    totals: Counter[str] = Counter()
    risky = 0
    with fh:
        for lineno, line in enumerate(fh, start=1):
            result = deid.scrub(line.rstrip("\n"))
            totals.update(result.counts)
            sys.stdout.write(result.text + "\n")
            if risks := deid.residual_risks(result.text):
                risky += 1
                if stats:
                    typer.echo(f"line {lineno}: still looks identifying ({', '.join(risks)})", err=True)
    if stats:
        typer.echo(
            f"replacements: {json.dumps(dict(sorted(totals.items())))}; lines at risk: {risky}", err=True
        )


@app.command("stage")
def stage_command(
    directory: Annotated[Path, typer.Argument(help="A built dataset folder (with manifest.json).")],
    uri: Annotated[str, typer.Argument(help="Destination prefix, s3://bucket/datasets/name/version/.")],
) -> None:
    """Upload a built dataset: checksummed, idempotent (unchanged files are skipped), manifest last."""
    from healthnav.datapipe.stage import stage_dataset

    try:
        written = stage_dataset(directory, uri)
    except Exception as exc:  # storage and dataset errors carry the URI/shard
        _fail(str(exc))
        return
    typer.echo(f"staged {directory} to {uri}: {written} file(s) uploaded")


@app.command("verify")
def verify_command(
    uri: Annotated[str, typer.Argument(help="Dataset prefix (s3://, file:// or a folder).")],
) -> None:
    """Check the manifest, every shard's sha256, record counts and record schema."""
    from healthnav.contracts.dataset import verify

    report = verify(uri)
    if report.ok:
        typer.echo(f"ok: {report.uri}: {report.shards_checked} shard(s), {report.records} records verified")
        return
    for problem in report.problems:
        typer.echo(f"FAIL: {problem}", err=True)
    raise typer.Exit(1)


@app.command("inspect")
def inspect_command(
    uri: Annotated[str, typer.Argument(help="Dataset prefix (s3://, file:// or a folder).")],
    split: Annotated[str, typer.Option(help="Split to sample from.")] = "train",
    samples: Annotated[int, typer.Option(min=0, help="How many records to print.")] = 3,
) -> None:
    """Counts by source and split, licences, statistics, and a few sample records."""
    from itertools import islice

    from healthnav.contracts.dataset import DatasetError, iter_records, load_manifest

    try:
        m = load_manifest(uri)
        typer.echo(
            f"{m.name} {m.version} (schema {m.schema_version}, deployable={m.deployable}, {m.created_at})"
        )
        typer.echo(f"counts: {json.dumps(m.counts)}")
        typer.echo(f"licences: {json.dumps(m.licenses)}")
        deid = m.stats.get("deidentification", {})
        typer.echo(f"dedup: {json.dumps(m.stats.get('dedup'))}")
        typer.echo(f"de-identification: {json.dumps(deid.get('replacements_by_type'))}")
        for rec in islice(iter_records(uri, split, manifest=m), samples):
            typer.echo("---")
            typer.echo(rec.model_dump_json(indent=1))
    except DatasetError as exc:
        _fail(str(exc))


@app.command("pubmed")
def pubmed_command(
    term: Annotated[str, typer.Argument(help="PubMed query, e.g. 'chest pain[tiab] AND triage'.")],
    out: Annotated[Path, typer.Option(help="Folder for ids.txt and efetch XML batches.")],
    email: Annotated[str, typer.Option(envvar="NCBI_EMAIL", help="Contact e-mail NCBI asks for.")],
    api_key: Annotated[
        str | None, typer.Option(envvar="NCBI_API_KEY", help="Raises the limit to 10 req/s.")
    ] = None,
    max_records: Annotated[int, typer.Option(min=1)] = 1000,
    batch_size: Annotated[int, typer.Option(min=1, max=10000)] = 200,
) -> None:
    """Download PubMed abstracts (esearch + efetch), resumable; build with format 'pubmed'."""
    from healthnav.datapipe.pubmed import EutilsClient, EutilsError

    try:
        with EutilsClient(email=email, api_key=api_key) as client:
            files = client.download(term, out, max_records=max_records, batch_size=batch_size)
    except EutilsError as exc:
        _fail(str(exc))
        return
    typer.echo(f"{len(files)} batch file(s) in {out}")

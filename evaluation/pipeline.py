"""``run_evaluation``: the whole evaluation of one fine-tune, from config to stored artifacts.

Columns of the comparison:

* ``candidate`` — base + adapter in-process, or the served model behind ``endpoint`` (what
  users get), or the bare base model when neither is given;
* ``base`` — the base model without adapter (in-process, or by ``endpointBaseModel`` name
  through the same endpoint), the yardstick of "no worse than base";
* ``reference`` — recorded answers of the API being replaced (JSONL, no network).

Artifacts, under ``<output>/eval/`` (:class:`~healthnav.contracts.run_output.RunOutput`) through
:mod:`healthnav.contracts.storage` (s3:// or
file://): ``metrics.json`` (layout below), ``report.md``, ``report.html``, ``metrics.png``,
``latency.png``, ``predictions.jsonl``. ``metrics.json``::

    {"schemaVersion": "1", "dataset": URI, "split": "test", "createdAt": RFC3339,
     "settings": {maxNewTokens, maxExamples, mcqScoring},   # what baseFrom checks
     "partial": bool, "passed": bool,            # gates passed (true when no gates)
     "metrics": {flat numeric candidate metrics}, # what FineTuneJob.status.output.metrics shows
     "candidate": {...}, "base": {...} | null, "reference": {...} | null,   # full metrics
     "models": {"candidate": name, ...}, "gates": GateResult, "gatesConfig": {...}, "notes": [...]}

A failure to load the dataset, the models or the reference file raises
:class:`EvaluationInputError` (a configuration error: ``hnav eval`` exits 78) before any model is
scored; model failures during scoring make results partial instead. Model URIs become local
directories through :func:`healthnav.contracts.models.materialize`, the trainer's cache.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from healthnav.contracts import storage
from healthnav.contracts.errors import ConfigurationError
from healthnav.contracts.models import ADAPTER_CONFIG, MODEL_CONFIG
from healthnav.contracts.run_output import RunOutput
from healthnav.contracts.uris import StorageURI
from healthnav.evaluation.gates import EvaluationGates, GateResult, evaluate_gates
from healthnav.evaluation.metrics import CostModel
from healthnav.evaluation.runner import ModelEvaluation
from healthnav.evaluation.tasks import EvalItem
from healthnav.schema import CamelModel

log = logging.getLogger(__name__)

METRICS_SCHEMA_VERSION = "1"


class EvaluationInputError(ConfigurationError):
    """The dataset, reference file or configuration is unusable; the message names what and where."""


class EvalConfig(CamelModel):
    """Everything ``hnav eval`` needs; also usable from Python (the trainer or a notebook)."""

    dataset: str = Field(min_length=1)
    """Dataset prefix (s3://, file:// or a local path) with manifest.json and a test split."""
    base_model: str | None = None
    """Base model: s3://, file://, a local directory or a hub id. Needed for in-process evaluation."""
    adapter: str | None = None
    """LoRA adapter prefix (PEFT directory); the candidate is base + adapter."""
    endpoint: str | None = None
    """OpenAI-compatible server (http://host:8000); the candidate is then the served ``model``."""
    model: str | None = None
    """Served model name of the candidate (the adapter's name on a healthnav server)."""
    endpoint_base_model: str | None = None
    """Served model name of the base model, to compare against it through the endpoint too."""
    reference: str | None = None
    """JSONL of prompt -> answer from the API being replaced."""
    gates: EvaluationGates | None = None
    output: str = Field(min_length=1)
    """The fine-tune's output prefix; artifacts go under <output>/eval/."""
    max_examples: int | None = Field(default=None, ge=1)
    """Evaluate only the first N test records (quick checks)."""
    max_new_tokens: int = Field(default=256, ge=1, le=8192)
    timeout_seconds: float = Field(default=60.0, gt=0)
    """Per-request timeout against an endpoint."""
    max_consecutive_failures: int = Field(default=3, ge=1)
    batch_size: int = Field(default=1, ge=1, le=256)
    """In-process models: free-text answers generated greedily this many at a time (several times
    faster on a CPU). Latency is then not measured, so a latency gate fails; 1 measures it."""
    skip_base: bool = False
    """Do not evaluate the base model (halves the time; no regression gate then)."""
    base_from: str | None = None
    """``eval/metrics.json`` of an earlier evaluation whose base column is reused instead of
    running the base again (several candidates against one base run). Refused unless it scored
    the same dataset, base model and generation settings."""
    embedding_model: str | None = None
    """Local sentence-transformers directory; default: the bundled all-MiniLM-L6-v2."""
    mcq_scoring: Literal["loglikelihood", "generated"] = "loglikelihood"
    """How multiple choice is scored: option log-likelihoods (lm-evaluation-harness), or the letter the
    model generates (what a served model without prompt logprobs allows)."""
    cost: CostModel = Field(default_factory=CostModel)
    device: str | None = None

    @model_validator(mode="after")
    def _source(self) -> EvalConfig:
        if self.endpoint is None and self.base_model is None:
            raise ValueError("give baseModel (in-process evaluation) or endpoint (served model)")
        if self.endpoint is not None and not self.model:
            raise ValueError("endpoint needs model: the served model name to evaluate")
        if self.adapter is not None and self.base_model is None:
            raise ValueError("adapter needs baseModel")
        if self.base_from is not None and self.skip_base:
            raise ValueError("baseFrom reuses a base column; skipBase drops it: give one of them")
        return self

    def settings(self) -> dict[str, Any]:
        """What makes two runs' scores comparable (recorded in metrics.json, checked by baseFrom)."""
        return {
            "maxNewTokens": self.max_new_tokens,
            "maxExamples": self.max_examples,
            "mcqScoring": self.mcq_scoring,
        }


class EvalOutcome(CamelModel):
    """What :func:`run_evaluation` returns (and the CLI prints)."""

    output: str
    passed: bool
    partial: bool
    gate: GateResult
    metrics: dict[str, float]
    artifacts: list[str]


def load_items(dataset: str, max_examples: int | None = None) -> list[EvalItem]:
    """The test split as evaluation items; every problem becomes an :class:`EvaluationInputError`."""
    from healthnav.contracts.dataset import DatasetError, iter_records
    from healthnav.evaluation.tasks import TaskError, build_items

    try:
        records = []
        for record in iter_records(dataset, split="test"):
            records.append(record)
            if max_examples and len(records) >= max_examples:
                break
        items = build_items(records)
    except (DatasetError, TaskError) as exc:
        raise EvaluationInputError(f"dataset {dataset}: {exc}") from exc
    if not items:
        raise EvaluationInputError(f"dataset {dataset}: the test split has no records")
    return items


def local_model(uri: str, field: str, required: str) -> str:
    """A directory (or hub id) for a model or adapter URI, through the platform's one cache."""
    from healthnav.contracts.models import ModelSourceError, materialize

    try:
        return materialize(uri, field=field, required=required)
    except ModelSourceError as exc:
        raise EvaluationInputError(str(exc)) from exc


def reused_base(config: EvalConfig) -> ModelEvaluation:
    """The base column of ``config.base_from``, after checking it scored the same thing."""
    source = config.base_from or ""
    try:
        doc = json.loads(storage.read_text(source))
    except (storage.StorageError, json.JSONDecodeError) as exc:
        raise EvaluationInputError(f"baseFrom {source}: not a readable metrics.json: {exc}") from exc
    base, name = doc.get("base"), (doc.get("models") or {}).get("base")
    if not isinstance(base, dict):
        raise EvaluationInputError(f"baseFrom {source}: that evaluation has no base column")
    served = config.endpoint_base_model if config.endpoint else None
    wanted = {"dataset": config.dataset, "base model": served or config.base_model, **config.settings()}
    found = {"dataset": doc.get("dataset"), "base model": name, **(doc.get("settings") or {})}
    if differs := [k for k, v in wanted.items() if found.get(k) != v]:
        shown = ", ".join(f"{k} {found.get(k)!r} (here {wanted[k]!r})" for k in differs)
        raise EvaluationInputError(f"baseFrom {source}: scored with a different {shown}")
    return ModelEvaluation(label="base", name=str(name), metrics=base, notes=[f"reused from {source}"])


def flat_numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric, non-null metrics only (what a CR status holds)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v is not None
    }


def write_artifacts(
    output: str,
    models: list[ModelEvaluation],
    *,
    gate: GateResult,
    gates: EvaluationGates | None,
    dataset: str,
    items: list[EvalItem],
    notes: list[str],
    settings: dict[str, Any] | None = None,
) -> list[str]:
    """Render the report and plots and store everything under ``<output>/eval/``; returns the URIs."""
    from healthnav.evaluation import report
    from healthnav.evaluation.runner import results_jsonl

    try:
        eval_dir = RunOutput(StorageURI.parse_location(output).as_prefix()).eval_dir
    except ValueError as exc:
        raise EvaluationInputError(f"output: {exc}") from exc
    created = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    by_label = {m.label: m for m in models}
    candidate = by_label["candidate"]
    doc = {
        "schemaVersion": METRICS_SCHEMA_VERSION,
        "dataset": dataset,
        "split": "test",
        "settings": settings or {},
        "createdAt": created,
        "partial": any(m.partial for m in models if m.label != "reference"),
        "passed": gate.passed,
        "metrics": flat_numeric(candidate.metrics),
        "candidate": candidate.metrics,
        "base": by_label["base"].metrics if "base" in by_label else None,
        "reference": by_label["reference"].metrics if "reference" in by_label else None,
        "models": {m.label: m.name for m in models},
        "gates": gate.to_dict(),
        "gatesConfig": gates.to_dict(exclude_none=True) if gates else None,
        "notes": notes + [f"{m.label}: {n}" for m in models for n in m.notes],
    }
    plots = {"metrics.png": report.metric_bars_png(models), "latency.png": report.latency_png(models)}
    markdown = report.render_markdown(
        models,
        gate=gate,
        dataset=dataset,
        n_items=len(items),
        kinds=dict(Counter(i.kind for i in items)),
        notes=notes,
        plots=list(plots),
        created_at=created,
    )
    written = []
    for name, data in plots.items():
        storage.write_bytes(eval_dir.join(name), data, "image/png")
        written.append(str(eval_dir.join(name)))
    storage.write_text(
        eval_dir.join("predictions.jsonl"),
        "".join(report_rows for report_rows in map(results_jsonl, models)),
        "application/x-ndjson",
    )
    storage.write_text(eval_dir.join("report.md"), markdown, "text/markdown; charset=utf-8")
    storage.write_text(eval_dir.join("report.html"), report.render_html(markdown), "text/html; charset=utf-8")
    # metrics.json last: a reader that finds it finds the report and plots too.
    storage.write_text(eval_dir.join(RunOutput.METRICS), json.dumps(doc, indent=2) + "\n", "application/json")
    written += [
        str(eval_dir.join(n)) for n in ("predictions.jsonl", "report.md", "report.html", RunOutput.METRICS)
    ]
    return written


def run_evaluation(
    config: EvalConfig,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> EvalOutcome:
    """Evaluate, compare, gate and store; see the module docstring for what goes where."""
    from healthnav.evaluation.bertscore import load_bert_scorer
    from healthnav.evaluation.embeddings import load_embedder
    from healthnav.evaluation.models import EndpointModel, InProcessModel
    from healthnav.evaluation.reference import ReferenceFileError, ReferenceIndex, load_reference
    from healthnav.evaluation.runner import evaluate_engine, evaluate_reference

    items = load_items(config.dataset, config.max_examples)
    reference = None
    if config.reference:
        try:
            reference = ReferenceIndex.build(load_reference(config.reference))
        except ReferenceFileError as exc:
            raise EvaluationInputError(str(exc)) from exc

    embedder, embed_note = load_embedder(config.embedding_model)
    bertscorer, bertscore_note = load_bert_scorer(config.device)
    notes = [embed_note, bertscore_note]
    kwargs: dict[str, Any] = dict(
        embedder=embedder,
        bertscorer=bertscorer,
        cost=config.cost,
        max_new_tokens=config.max_new_tokens,
        max_consecutive_failures=config.max_consecutive_failures,
        mcq_scoring=config.mcq_scoring,
        batch_size=config.batch_size,
    )

    def step(label: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: progress(label, done, total)) if progress else None

    # Each model is loaded just before it runs and dropped after, so two 7B models never share memory.
    base_dir = local_model(config.base_model, "baseModel", MODEL_CONFIG) if config.base_model else None
    adapter_dir = local_model(config.adapter, "adapter", ADAPTER_CONFIG) if config.adapter else None
    timeout = config.timeout_seconds
    plan: list[tuple[str, Callable[[], Any]]] = []
    models: list[ModelEvaluation] = [reused_base(config)] if config.base_from else []
    if not config.skip_base and not config.base_from and (config.endpoint or adapter_dir):
        if config.endpoint and config.endpoint_base_model:
            name = config.endpoint_base_model
            plan.append(("base", lambda: EndpointModel(config.endpoint or "", name, timeout_s=timeout)))
        elif base_dir is not None:
            plan.append(
                ("base", lambda: InProcessModel.load(base_dir, device=config.device, name=config.base_model))
            )
    if config.endpoint:
        plan.append(
            ("candidate", lambda: EndpointModel(config.endpoint or "", config.model or "", timeout_s=timeout))
        )
    elif adapter_dir is not None:
        plan.append(
            (
                "candidate",
                lambda: InProcessModel.load(
                    base_dir or "", adapter_dir, device=config.device, name=config.adapter
                ),
            )
        )
    else:
        plan.append(
            (
                "candidate",
                lambda: InProcessModel.load(base_dir or "", device=config.device, name=config.base_model),
            )
        )
    for label, make in plan:
        model = make()
        models.append(evaluate_engine(label, model, items, progress=step(label), **kwargs))
        del model
    if reference is not None:
        models.append(
            evaluate_reference(items, reference, embedder=embedder, bertscorer=bertscorer, cost=config.cost)
        )

    by_label = {m.label: m for m in models}
    candidate = by_label["candidate"]
    gate = evaluate_gates(
        candidate.metrics, by_label["base"].metrics if "base" in by_label else None, config.gates
    )
    artifacts = write_artifacts(
        config.output,
        models,
        gate=gate,
        gates=config.gates,
        dataset=config.dataset,
        items=items,
        notes=notes,
        settings=config.settings(),
    )
    return EvalOutcome(
        output=artifacts[-1].rsplit("/", 1)[0] + "/",
        passed=gate.passed,
        partial=candidate.partial,
        gate=gate,
        metrics=flat_numeric(candidate.metrics),
        artifacts=artifacts,
    )

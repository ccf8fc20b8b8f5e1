"""The evaluation report: one Markdown document, the same rendered to HTML, and PNG plots.

The Markdown is the source (it reads well in a pull request or the model card); HTML is
rendered from it with markdown-it (already installed with rich) so the two never disagree.
Plots use matplotlib's Agg backend: no display, works in a training pod.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import Any

from healthnav.evaluation.gates import GateResult
from healthnav.evaluation.runner import ModelEvaluation

QUALITY_ROWS: tuple[tuple[str, str], ...] = (
    ("rougeL", "ROUGE-L F1"),
    ("bleu", "BLEU (/100)"),
    ("semanticSimilarity", "Semantic similarity"),
    ("bertScore", "BERTScore F1"),
    ("mcqAccuracy", "MCQ accuracy"),
    ("mcqAccuracyNorm", "MCQ accuracy (length-normalised)"),
    ("riskLevelAccuracy", "Risk-level accuracy"),
    ("assessmentParseRate", "Assessment parse rate (unconstrained)"),
    ("redFlagRecall", "Red-flag recall (model)"),
    ("redFlagRecallWithRules", "Red-flag recall (model + rules)"),
)
SPEED_ROWS: tuple[tuple[str, str], ...] = (
    ("ttftP50Seconds", "TTFT p50 (s)"),
    ("ttftP95Seconds", "TTFT p95 (s)"),
    ("latencyP50Seconds", "Latency p50 (s)"),
    ("latencyP95Seconds", "Latency p95 (s)"),
    ("completionTokensMean", "Completion tokens (mean)"),
    ("costPerQueryUsd", "Cost per query (USD)"),
)
COLUMN_TITLES = {"base": "Base", "candidate": "Base + adapter", "reference": "API reference"}
PLOT_METRICS = ("rougeL", "bleu", "semanticSimilarity", "mcqAccuracy", "riskLevelAccuracy", "redFlagRecall")


def _fmt(value: Any, key: str) -> str:
    if value is None:
        return "n/a"
    if key == "costPerQueryUsd":
        return f"${value:.3g}"
    if key == "completionTokensMean":
        return f"{value:.1f}"
    return f"{value:.3f}" if key.endswith("Seconds") else f"{value:.4f}"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def metric_bars_png(models: Sequence[ModelEvaluation]) -> bytes:
    """Grouped bars: each quality metric, one bar per model (missing metrics left empty)."""
    plt = _plt()
    keys = [k for k in PLOT_METRICS if any(m.metrics.get(k) is not None for m in models)] or list(
        PLOT_METRICS[:1]
    )
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(keys) + 2), 4))
    width = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        values = [model.metrics.get(k) or 0.0 for k in keys]
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(keys))]
        bars = ax.bar(xs, values, width, label=COLUMN_TITLES.get(model.label, model.label))
        ax.bar_label(
            bars,
            labels=[f"{model.metrics[k]:.2f}" if model.metrics.get(k) is not None else "n/a" for k in keys],
            fontsize=7,
            rotation=90,
            padding=2,
        )
    ax.set_xticks(range(len(keys)), keys, rotation=20)
    ax.set_ylim(0, 1.3)
    ax.set_ylabel("score (0..1)")
    ax.set_title("Quality metrics")
    ax.legend(fontsize=8)
    return _png(fig)


def latency_png(models: Sequence[ModelEvaluation]) -> bytes:
    """Distribution of end-to-end latency and time to first token per model (box plots)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, attr, title in (
        (axes[0], "total_s", "Total latency (s)"),
        (axes[1], "ttft_s", "Time to first token (s)"),
    ):
        data, labels = [], []
        for model in models:
            values = [
                getattr(r, attr) for r in model.results if getattr(r, attr) is not None and r.error is None
            ]
            if values:
                data.append(values)
                labels.append(COLUMN_TITLES.get(model.label, model.label))
        if data:
            ax.boxplot(data, tick_labels=labels, showfliers=True)
        else:
            ax.text(0.5, 0.5, "no latency measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
    fig.suptitle("Latency distribution per query")
    return _png(fig)


def render_markdown(
    models: Sequence[ModelEvaluation],
    *,
    gate: GateResult | None,
    dataset: str,
    n_items: int,
    kinds: dict[str, int],
    notes: Sequence[str],
    plots: Sequence[str],
    created_at: str,
) -> str:
    """The report as Markdown; ``plots`` are PNG file names in the same folder."""
    lines = ["# Evaluation report", ""]
    lines += [
        f"- Dataset: `{dataset}` (test split, {n_items} records: "
        + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
        + ")"
    ]
    for model in models:
        lines.append(f"- {COLUMN_TITLES.get(model.label, model.label)}: `{model.name}`")
    lines.append(f"- Created: {created_at}")
    partial = [m for m in models if m.partial]
    if partial:
        lines += [
            "",
            "> **Partial results**: "
            + "; ".join(
                f"{COLUMN_TITLES.get(m.label, m.label)} failed on {m.metrics['counts']['failed']} "
                f"of {m.metrics['counts']['items']} records"
                for m in partial
            )
            + ". Metrics cover only the records that succeeded.",
        ]
    if gate is not None:
        verdict = "PASSED" if gate.passed else "FAILED"
        lines += ["", f"## Gates: {verdict}", "", f"{gate.message}", ""]
        if gate.checks:
            lines += ["| check | metric | value | threshold | base | result |", "|---|---|---|---|---|---|"]
            for c in gate.checks:
                lines.append(
                    f"| {c.kind} | {c.metric} | {_fmt(c.value, c.metric)} | {_fmt(c.threshold, c.metric)} | "
                    f"{_fmt(c.baseline, c.metric)} | {'pass' if c.passed else '**fail**'} |"
                )
    header = "| metric | " + " | ".join(COLUMN_TITLES.get(m.label, m.label) for m in models) + " |"
    rule = "|---|" + "---|" * len(models)
    for title, rows in (("Quality", QUALITY_ROWS), ("Latency and cost", SPEED_ROWS)):
        lines += ["", f"## {title}", "", header, rule]
        for key, name in rows:
            if all(m.metrics.get(key) is None for m in models):
                continue
            lines.append(f"| {name} | " + " | ".join(_fmt(m.metrics.get(key), key) for m in models) + " |")
    lines += ["", "## Records scored", "", header, rule]
    for key, name in (
        ("evaluated", "evaluated"),
        ("failed", "failed"),
        ("mcqAccuracy", "multiple choice"),
        ("riskLevelAccuracy", "triage"),
        ("redFlagRecall", "emergencies (red flags)"),
        ("rougeL", "generated answers"),
    ):
        lines.append(f"| {name} | " + " | ".join(str(m.metrics["counts"].get(key, 0)) for m in models) + " |")
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p}]({p})" for p in plots]
    all_notes = [*notes, *(f"{COLUMN_TITLES.get(m.label, m.label)}: {n}" for m in models for n in m.notes)]
    if all_notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in all_notes]
    lines += [
        "",
        "## Method",
        "",
        "- Prompts are rendered with `healthnav.contracts.prompts.render_prompt`, as in training and "
        "serving; greedy decoding.",
        "- Multiple choice (MedQA, MedMCQA, PubMedQA): the option with the highest summed log-probability "
        "of its continuation (`acc`), and the same divided by the option's length in chars (`acc_norm`), "
        "as lm-evaluation-harness does. API answers are scored by the option they name.",
        "- ROUGE-L (rouge-score, F1 with stemming), BLEU (sacrebleu corpus BLEU / 100), semantic similarity "
        "(cosine of sentence embeddings), BERTScore F1 (bert-score over all-MiniLM-L6-v2, layer 5 of 6, no "
        "idf, no baseline rescaling).",
        "- Assessment parse rate: the share of triage answers, generated without constraints, that carry a "
        "valid risk level, an assessment and recommendations (the server's structured output guarantees "
        "all three; this measures how well the model itself learnt the format).",
        "- Risk level parsed with `parse_assessment_output`; red-flag recall is the share of emergency "
        'records the model escalates itself ("+ rules": or the server\'s deterministic red-flag rules do).',
        "- Cost per query: self-hosted = GPU $/hour x latency / concurrency; API = its per-token prices.",
    ]
    return "\n".join(lines) + "\n"


def render_html(markdown: str, title: str = "healthnav evaluation report") -> str:
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}blockquote{background:#fff3cd;"
        "margin:1em 0;padding:.5em 1em;border-left:4px solid #e0a800}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n{body}</body></html>\n"
    )

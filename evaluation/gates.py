"""Quality gates: the rule that decides whether a fine-tune may be promoted to serving.

A platform that promotes a worse model automatically is dangerous in medicine, so a gate is
explicit and conservative: a metric the gate names but the evaluation did not measure fails
the gate (it is not skipped), and a partial evaluation fails unless ``allowPartial`` says so.

:class:`EvaluationGates` is the ``spec.evaluation.gates`` block of a FineTuneJob; the operator
embeds this model in its CRD and ``hnav eval --gates`` reads the same JSON/YAML. Field names
are the metric keys of :data:`METRIC_KEYS` (``rougeL``, ``mcqAccuracy``, ...) so
``{gates: {rougeL: 0.30, mcqAccuracy: 0.45}}`` reads the way the metrics are reported.

Only pydantic is imported: the operator loads this module without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from healthnav.schema import CamelModel

# Quality metrics: higher is better, all on a 0..1 scale (BLEU is sacrebleu's score / 100) so
# one "no worse than base by more than X" threshold means the same thing for every metric.
QUALITY_METRICS: tuple[str, ...] = (
    "rougeL",
    "bleu",
    "semanticSimilarity",
    "mcqAccuracy",
    "mcqAccuracyNorm",
    "riskLevelAccuracy",
    "redFlagRecall",
)
# Cost metrics: lower is better; gates on them are maxima.
COST_METRICS: tuple[str, ...] = (
    "latencyP95Seconds",
    "ttftP95Seconds",
    "costPerQueryUsd",
)
METRIC_KEYS: tuple[str, ...] = QUALITY_METRICS + COST_METRICS

QualityMetric = Literal[QUALITY_METRICS]  # type: ignore[valid-type]
"""A quality metric's key, as the type of fields that name one (the CRD enum comes from it)."""


class EvaluationGates(CamelModel):
    """Minimums per quality metric, maxima for latency/cost, and a regression bound vs the base.

    Every field is optional; an empty gate passes any complete evaluation.
    """

    rouge_l: float | None = Field(default=None, ge=0.0, le=1.0)
    """Minimum ROUGE-L F1 (0..1) of generated answers against the reference outputs."""
    bleu: float | None = Field(default=None, ge=0.0, le=1.0)
    """Minimum corpus BLEU, as a fraction (sacrebleu's 0..100 score divided by 100)."""
    semantic_similarity: float | None = Field(default=None, ge=0.0, le=1.0)
    """Minimum mean cosine similarity of sentence embeddings (answer vs reference)."""
    mcq_accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    """Minimum multiple-choice accuracy, options scored by log-likelihood (lm-evaluation-harness acc)."""
    mcq_accuracy_norm: float | None = Field(default=None, ge=0.0, le=1.0)
    """Minimum length-normalised multiple-choice accuracy (lm-evaluation-harness acc_norm)."""
    risk_level_accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    """Minimum fraction of triage records whose generated risk level equals the reference."""
    red_flag_recall: float | None = Field(default=None, ge=0.0, le=1.0)
    """Minimum fraction of emergency triage records the model itself escalates to emergency."""
    max_latency_p95_seconds: float | None = Field(default=None, gt=0)
    """Maximum 95th-percentile end-to-end generation latency per query, in seconds."""
    max_ttft_p95_seconds: float | None = Field(default=None, gt=0)
    """Maximum 95th-percentile time to first token, in seconds."""
    max_cost_per_query_usd: float | None = Field(default=None, gt=0)
    """Maximum estimated cost per query in US dollars (from the GPU's hourly price)."""
    max_regression_vs_base: float | None = Field(default=None, ge=0.0, le=1.0)
    """The candidate may be worse than the base model by at most this much (absolute, 0..1) on
    each quality metric measured for both."""
    regression_metrics: list[QualityMetric] | None = Field(default=None, min_length=1)
    """Quality metrics the regression bound applies to; all measured ones when unset."""
    min_examples: int = Field(default=1, ge=1)
    """A gated metric computed over fewer examples than this fails: a gate passed on a handful
    of records proves nothing."""
    allow_partial: bool = False
    """Let a partial evaluation (some records failed, e.g. an endpoint timed out) pass."""

    @field_validator("regression_metrics")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("regressionMetrics must not repeat a metric")
        return value

    @model_validator(mode="after")
    def _regression_needs_bound(self) -> EvaluationGates:
        if self.regression_metrics is not None and self.max_regression_vs_base is None:
            raise ValueError("regressionMetrics needs maxRegressionVsBase")
        return self

    def minimums(self) -> dict[str, float]:
        """Metric key -> minimum, for the quality gates that are set."""
        return {k: v for k in QUALITY_METRICS if (v := getattr(self, _attr(k))) is not None}

    def maximums(self) -> dict[str, float]:
        """Metric key -> maximum, for the latency/cost gates that are set."""
        return {k: v for k in COST_METRICS if (v := getattr(self, _max_attr(k))) is not None}

    def is_empty(self) -> bool:
        return not self.minimums() and not self.maximums() and self.max_regression_vs_base is None


def _attr(camel: str) -> str:
    """snake_case attribute for a camelCase key (``rougeL`` -> ``rouge_l``)."""
    return "".join("_" + c.lower() if c.isupper() else c for c in camel)


def _max_attr(camel: str) -> str:
    """Attribute of a cost metric's maximum gate (``latencyP95Seconds`` -> ``max_latency_p95_seconds``)."""
    return "max_" + _attr(camel)


class GateCheck(CamelModel):
    """One comparison, with enough context to explain a failure in a status condition."""

    metric: str
    kind: Literal["minimum", "maximum", "regression", "coverage", "completeness"]
    threshold: float | None = None
    value: float | None = None
    baseline: float | None = None
    passed: bool
    message: str


class GateResult(CamelModel):
    """Outcome of :func:`evaluate_gates`; ``reason``/``message`` fit a Kubernetes condition."""

    passed: bool
    reason: Literal["GatesPassed", "GatesFailed", "NoGates"]
    message: str
    checks: list[GateCheck] = Field(default_factory=list)

    @property
    def failures(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]


def _num(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _count(metrics: Mapping[str, Any], key: str) -> int | None:
    counts = metrics.get("counts")
    if not isinstance(counts, Mapping) or key not in counts:
        return None
    return int(counts[key])


def evaluate_gates(
    metrics: Mapping[str, Any],
    base_metrics: Mapping[str, Any] | None,
    gates: EvaluationGates | Mapping[str, Any] | None,
) -> GateResult:
    """Decide whether ``metrics`` (the candidate) passes ``gates``; pure, no I/O.

    ``metrics`` and ``base_metrics`` are flat dicts keyed by :data:`METRIC_KEYS` (the
    ``metrics.json`` form), optionally with ``counts`` ({metric: examples}) and ``partial``.
    A gated metric that is missing, or was computed over fewer than ``minExamples`` records,
    fails. The regression bound needs the base metrics; without them it fails rather than
    passing unchecked.
    """
    if gates is None:
        gates = EvaluationGates()
    elif not isinstance(gates, EvaluationGates):
        gates = EvaluationGates.model_validate(gates)
    if gates.is_empty():
        partial = bool(metrics.get("partial"))
        ok = not partial or gates.allow_partial
        return GateResult(
            passed=ok,
            reason="NoGates" if ok else "GatesFailed",
            message="no gates configured" if ok else "evaluation is partial and allowPartial is false",
            checks=[]
            if ok
            else [GateCheck(metric="*", kind="completeness", passed=False, message="evaluation is partial")],
        )

    checks = [
        *_completeness_checks(metrics, gates),
        *_minimum_checks(metrics, gates),
        *_maximum_checks(metrics, gates),
        *_regression_checks(metrics, base_metrics, gates),
    ]
    failures = [c for c in checks if not c.passed]
    if failures:
        message = "; ".join(c.message for c in failures)
        return GateResult(passed=False, reason="GatesFailed", message=message[:1000], checks=checks)
    return GateResult(
        passed=True, reason="GatesPassed", message=f"all {len(checks)} gate checks passed", checks=checks
    )


def _completeness_checks(metrics: Mapping[str, Any], gates: EvaluationGates) -> list[GateCheck]:
    """A partial evaluation fails unless ``allowPartial``."""
    if not metrics.get("partial") or gates.allow_partial:
        return []
    return [
        GateCheck(
            metric="*",
            kind="completeness",
            passed=False,
            message="evaluation is partial (some records failed) and allowPartial is false",
        )
    ]


def _coverage_checks(metrics: Mapping[str, Any], key: str, min_examples: int) -> list[GateCheck]:
    """A failed coverage check when ``key`` was measured on fewer than ``min_examples`` records."""
    n = _count(metrics, key)
    if n is None or n >= min_examples:
        return []
    return [
        GateCheck(
            metric=key,
            kind="coverage",
            threshold=min_examples,
            value=n,
            passed=False,
            message=f"{key} measured on {n} examples, fewer than minExamples={min_examples}",
        )
    ]


def _minimum_checks(metrics: Mapping[str, Any], gates: EvaluationGates) -> list[GateCheck]:
    """Each quality minimum: an unmeasured metric fails; a measured one is checked for coverage too."""
    checks: list[GateCheck] = []
    for key, minimum in gates.minimums().items():
        value = _num(metrics, key)
        if value is None:
            checks.append(
                GateCheck(
                    metric=key,
                    kind="minimum",
                    threshold=minimum,
                    passed=False,
                    message=f"{key} was not measured (no records of that kind in the test split?)",
                )
            )
            continue
        checks.extend(_coverage_checks(metrics, key, gates.min_examples))
        ok = value >= minimum
        checks.append(
            GateCheck(
                metric=key,
                kind="minimum",
                threshold=minimum,
                value=value,
                passed=ok,
                message=f"{key} {value:.4f} {'>=' if ok else '<'} minimum {minimum:.4f}",
            )
        )
    return checks


def _maximum_checks(metrics: Mapping[str, Any], gates: EvaluationGates) -> list[GateCheck]:
    """Each latency/cost maximum: an unmeasured metric fails."""
    checks: list[GateCheck] = []
    for key, maximum in gates.maximums().items():
        value = _num(metrics, key)
        ok = value is not None and value <= maximum
        checks.append(
            GateCheck(
                metric=key,
                kind="maximum",
                threshold=maximum,
                value=value,
                passed=ok,
                message=f"{key} was not measured"
                if value is None
                else f"{key} {value:.4g} {'<=' if ok else '>'} maximum {maximum:.4g}",
            )
        )
    return checks


def _regression_checks(
    metrics: Mapping[str, Any], base_metrics: Mapping[str, Any] | None, gates: EvaluationGates
) -> list[GateCheck]:
    """The candidate against the base model, per quality metric, within ``maxRegressionVsBase``."""
    bound = gates.max_regression_vs_base
    if bound is None:
        return []
    if base_metrics is None:
        return [
            GateCheck(
                metric="*",
                kind="regression",
                threshold=bound,
                passed=False,
                message="maxRegressionVsBase is set but the base model was not evaluated",
            )
        ]
    checks: list[GateCheck] = []
    compared = 0
    for key in list(gates.regression_metrics or QUALITY_METRICS):
        value, base = _num(metrics, key), _num(base_metrics, key)
        if value is None or base is None:
            if gates.regression_metrics is not None:
                checks.append(
                    GateCheck(
                        metric=key,
                        kind="regression",
                        threshold=bound,
                        value=value,
                        baseline=base,
                        passed=False,
                        message=f"{key} not measured for both candidate and base",
                    )
                )
            continue
        compared += 1
        drop = base - value
        ok = drop <= bound + 1e-12
        checks.append(
            GateCheck(
                metric=key,
                kind="regression",
                threshold=bound,
                value=value,
                baseline=base,
                passed=ok,
                message=f"{key} {value:.4f} vs base {base:.4f}: "
                + (f"within {bound:.4f}" if ok else f"regressed by {drop:.4f} > {bound:.4f}"),
            )
        )
    if compared == 0 and gates.regression_metrics is None:
        checks.append(
            GateCheck(
                metric="*",
                kind="regression",
                threshold=bound,
                passed=False,
                message="no quality metric was measured for both candidate and base",
            )
        )
    return checks

"""Prometheus metrics of the operator (shared by every controller in the process).

``healthnav_operator_objects{kind,phase}`` is computed at scrape time from the controllers'
in-memory phase maps instead of being incremented and decremented on transitions, so it is
always exactly what the operator believes and cannot drift after a missed event or restart.
"""

from __future__ import annotations

from collections import Counter as _Counter
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RECONCILES = Counter(
    "healthnav_operator_reconciles",
    "Reconciles run, by custom resource kind and result (ok, error, conflict).",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "healthnav_operator_reconcile_duration_seconds",
    "Wall time of one reconcile, API calls included.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ERRORS = Counter(
    "healthnav_operator_reconcile_errors",
    "Reconciles that raised, by kind and exception class (they are retried with backoff).",
    ["kind", "error"],
)
CHILDREN_CREATED = Counter(
    "healthnav_operator_children_created",
    "Objects the operator created, by custom resource kind and child kind.",
    ["kind", "child"],
)

ADAPTER_VERIFICATIONS = Counter(
    "healthnav_operator_adapter_verifications",
    "Answers of ModelServe applications to the operator's adapter verification, by state "
    "(Verified, NotRecorded, Refused, LoadFailed, or Unanswered: asked again later).",
    ["state"],
)


class PhaseCollector(Collector):
    """Gauge of objects by phase, read from ``source()`` (kind -> {key: phase}) at scrape time."""

    def __init__(self) -> None:
        self._sources: dict[str, Callable[[], Mapping[object, str | None]]] = {}

    def register(self, kind: str, source: Callable[[], Mapping[object, str | None]]) -> None:
        self._sources[kind] = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "healthnav_operator_objects",
            "Custom resources known to the operator, by kind and phase.",
            labels=["kind", "phase"],
        )
        for kind, source in self._sources.items():
            counts = _Counter(phase or "Unknown" for phase in source().values())
            for phase, n in sorted(counts.items()):
                family.add_metric([kind, phase], n)
        yield family


PHASES = PhaseCollector()
REGISTRY.register(PHASES)

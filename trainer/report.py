"""Run artifacts a reviewer reads: metrics.json, the loss curve, the model card, the termination message."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from healthnav.trainer.config import TERMINATION_LOG, TrainerConfig

log = logging.getLogger(__name__)

TERMINATION_LIMIT = 4096  # Kubernetes keeps at most 4 KiB of a termination message


def write_termination_message(message: str, path: str = TERMINATION_LOG) -> bool:
    """Best effort: Kubernetes shows this in the pod status (and the operator in conditions).

    Only an existing file is written (the kubelet mounts it into the container); on a laptop
    there is none and nothing is created under /dev.
    """
    if not os.path.exists(path):
        return False
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(message.encode("utf-8")[:TERMINATION_LIMIT].decode("utf-8", "ignore"))
        return True
    except OSError:
        return False


def plot_loss_curve(
    loss_history: Sequence[tuple[int, float]], path: Path, title: str = "training loss"
) -> Path | None:
    if not loss_history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s for s, _ in loss_history]
    losses = [v for _, v in loss_history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, losses, linewidth=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (response tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_model_card(
    config: TrainerConfig,
    metrics: dict[str, Any],
    manifest: dict[str, Any],
    adapter_uri: str,
) -> str:
    """Markdown model card: provenance, hyperparameters, metrics, intended use and limits."""
    t = config.training
    licenses = manifest.get("licenses") or {}
    deployable = manifest.get("deployable")
    lines = [
        f"# {config.run_name}: LoRA adapter for {config.base_model}",
        "",
        "## Model",
        f"- Base model: `{config.base_model}`",
        f"- Method: {config.method}"
        + (
            f" ({config.quantization.bits}-bit {config.quantization.type}, double quant: "
            f"{config.quantization.double_quant})"
            if config.quantization
            else ""
        ),
        f"- LoRA: r={config.lora.r}, alpha={config.lora.alpha}, dropout={config.lora.dropout}, "
        f"target modules: {', '.join(config.lora.target_modules)}",
        f"- Adapter: `{adapter_uri}` (safetensors + adapter_config.json + tokenizer)",
        "- Prompt format: `healthnav.contracts.prompts.render_prompt` (the server renders requests alike)",
        "",
        "## Training data",
        f"- Dataset: `{config.dataset}`",
        f"- Name / version: {manifest.get('name', '?')} / {manifest.get('version', '?')}, "
        f"schema {manifest.get('schema_version', '?')}",
        f"- Licences: {', '.join(f'{k} ({v})' for k, v in licenses.items()) or 'not recorded'}",
        f"- Deployable per its licences: {deployable if deployable is not None else 'unknown'}",
        f"- Examples trained on: {metrics.get('examples')} (skipped: {metrics.get('skippedExamples')}, "
        f"truncated: {metrics.get('truncatedExamples')})",
        "",
        "## Hyperparameters",
        "| setting | value |",
        "|---|---|",
    ]
    for key, value in t.to_dict().items():
        lines.append(f"| {key} | {_fmt(value)} |")
    lines += [
        "",
        "## Metrics",
        "| metric | value |",
        "|---|---|",
    ]
    for key, value in metrics.items():
        if not isinstance(value, dict | list):
            lines.append(f"| {key} | {_fmt(value)} |")
    lines += [
        "",
        "![loss curve](loss_curve.png)",
        "",
        "## Intended use",
        "Decision support inside the AI Health Navigator: triage guidance and medical question answering "
        "for patients, always with the app's disclaimer and its deterministic red-flag escalation layer. "
        "Not a medical device and not a substitute for a clinician.",
        "",
        "## Limitations",
        "- Trained on a bounded instruction dataset; it can state wrong facts fluently. Evaluate (hnav eval) "
        "and pass the evaluation gates before serving.",
        "- Emergencies must be caught by the serving layer's red-flag rules, not by this model.",
        "- Not validated for paediatric dosing, pregnancy or rare diseases unless the data says so.",
        "",
    ]
    if deployable is False:
        lines.insert(
            1,
            "\n> **Not deployable:** the training data's licence (e.g. a data use agreement) forbids "
            "serving this model.\n",
        )
    return "\n".join(lines)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path

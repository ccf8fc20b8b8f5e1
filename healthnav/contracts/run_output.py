"""The files under one fine-tune's output prefix: who writes what, and where readers find it.

``<output root>/<namespace>/<FineTuneJob name>/`` (the operator's default root, or the job's
``spec.output.uri``) holds::

    adapter/          the LoRA adapter (safetensors, adapter_config.json, tokenizer)
    checkpoints/      resumable checkpoints (latest.json names the newest)
    metrics.json      training metrics, written last
    loss_curve.png, model-card.md, merged/ (optional full model)
    eval/metrics.json evaluation metrics and the gate verdict, written last in eval/
    eval/…            report.md, report.html, plots, predictions.jsonl

The trainer writes everything but ``eval/``; the evaluation (in the training pod, or ``hnav
eval``) writes ``eval/``; the operator reads both metrics files into FineTuneJob.status; the
server loads ``adapter/`` (by a ModelServe's resolved URI, or found by name under a prefix).

:class:`RunOutput` is the only place these names are spelled.
"""

from __future__ import annotations

from dataclasses import dataclass

from healthnav.contracts.uris import StorageURI


@dataclass(frozen=True)
class RunOutput:
    """One run's output prefix and the locations of everything in it."""

    prefix: StorageURI

    ADAPTER = "adapter"
    CHECKPOINTS = "checkpoints"
    METRICS = "metrics.json"
    LOSS_CURVE = "loss_curve.png"
    MODEL_CARD = "model-card.md"
    MERGED = "merged"
    EVAL = "eval"

    @classmethod
    def parse(cls, uri: str | StorageURI) -> RunOutput:
        """The run at ``uri`` (s3://, file:// or an absolute path); ValueError names a bad URI."""
        return cls(StorageURI.parse(uri).as_prefix())

    @classmethod
    def for_job(cls, root: str, namespace: str, name: str) -> RunOutput:
        """The run of FineTuneJob ``namespace/name`` under an output root: ``<root>/<namespace>/<name>/``."""
        return cls(StorageURI.parse(root).as_prefix().join(namespace, name + "/"))

    def __str__(self) -> str:
        return str(self.prefix)

    @property
    def adapter(self) -> StorageURI:
        return self.prefix.join(self.ADAPTER + "/")

    @property
    def checkpoints(self) -> StorageURI:
        return self.prefix.join(self.CHECKPOINTS + "/")

    @property
    def metrics(self) -> StorageURI:
        return self.prefix.join(self.METRICS)

    @property
    def eval_dir(self) -> StorageURI:
        return self.prefix.join(self.EVAL + "/")

    @property
    def eval_metrics(self) -> StorageURI:
        return self.eval_dir.join(self.METRICS)

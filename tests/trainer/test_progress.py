"""Progress payload contract (FineTuneJob.status.progress) and a reporter that never breaks training."""

from __future__ import annotations

import json
import math

import pytest

from healthnav.contracts.progress import TrainingProgress
from healthnav.trainer.config import ProgressTarget
from healthnav.trainer.progress import ConfigMapProgressReporter

STATUS_KEYS = ("percent", "step", "totalSteps", "epoch", "loss", "tokensPerSecond", "etaSeconds")
"""FineTuneJob.status.progress as the operator shows it, in order."""


@pytest.mark.unit
def test_payload_has_exactly_the_status_keys_and_is_json_safe() -> None:
    progress = TrainingProgress.at(
        step=25, total_steps=100, epoch=0.51234, loss=math.nan, tokens_per_second=1234.567, eta_seconds=99.6
    )
    payload = progress.payload()
    assert tuple(payload) == STATUS_KEYS
    assert payload == {
        "percent": 25.0,
        "step": 25,
        "totalSteps": 100,
        "epoch": 0.512,
        "loss": None,
        "tokensPerSecond": 1234.6,
        "etaSeconds": 100,
    }
    body = progress.configmap_patch()
    assert json.loads(body["data"]["progress"]) == payload
    assert TrainingProgress.from_configmap(body["data"]) == progress  # what the operator reads back


@pytest.mark.unit
def test_payload_clamps_step() -> None:
    assert (
        TrainingProgress.at(
            step=7, total_steps=5, epoch=1, loss=0.5, tokens_per_second=None, eta_seconds=None
        ).percent
        == 100.0
    )


@pytest.mark.unit
def test_unreachable_api_server_is_not_fatal_and_is_throttled() -> None:
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = "http://127.0.0.1:9"  # discard port: connection refused, a real network failure
    cfg.retries = 0
    api = client.CoreV1Api(client.ApiClient(cfg))
    reporter = ConfigMapProgressReporter(
        ProgressTarget(namespace="ns", config_map="cm"), min_interval=60, api=api
    )
    progress = TrainingProgress.at(
        step=1, total_steps=2, epoch=0, loss=1.0, tokens_per_second=1, eta_seconds=1
    )
    assert reporter.report(progress) is False
    assert reporter._failures == 1
    assert reporter.report(progress) is False  # throttled: no second attempt within min_interval
    assert reporter._failures == 1


@pytest.mark.cluster
def test_reporter_patches_the_progress_configmap(cluster) -> None:
    from kubernetes import client

    api = client.CoreV1Api(cluster.api_client())
    name = "ftj-progress-test"
    api.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"config.yaml": "x: 1"})
    )
    try:
        reporter = ConfigMapProgressReporter(ProgressTarget(namespace="default", config_map=name), api=api)
        progress = TrainingProgress.at(
            step=3, total_steps=10, epoch=0.3, loss=1.25, tokens_per_second=500.0, eta_seconds=70
        )
        assert reporter.report(progress)
        cm = api.read_namespaced_config_map(name, "default")
        assert json.loads(cm.data["progress"]) == progress.payload()
        assert cm.data["config.yaml"] == "x: 1"
    finally:
        api.delete_namespaced_config_map(name, "default")

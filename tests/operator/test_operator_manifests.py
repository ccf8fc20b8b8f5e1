"""Manifest builders: the objects a FineTuneJob turns into, field by field (no cluster needed)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from ftj_helpers import manifest, valid_spec

from healthnav.contracts.errors import EXIT_CONFIG_ERROR
from healthnav.operator.child_objects import merge_affinity, merge_tolerations
from healthnav.operator.finetunejob_manifests import FTJ_LABEL, KUEUE_QUEUE_LABEL, children
from healthnav.operator.finetunejob_spec import FineTuneJobSpec
from healthnav.operator.settings import OperatorSettings
from healthnav.trainer.config import TrainerConfig

pytestmark = pytest.mark.unit


def _ftj(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    m = manifest("triage-v3", "ml", spec)
    m["metadata"]["uid"] = "uid-1"
    return m


def _build(
    spec: dict[str, Any] | None = None, **settings: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    ftj = _ftj(spec)
    return children(ftj, FineTuneJobSpec.model_validate(ftj["spec"]), OperatorSettings(**settings))


def test_trainer_config_is_the_trainers_own_schema() -> None:
    before, _ = _build({**valid_spec(), "training": {"epochs": 1, "maxSteps": 50}})
    cm = next(o for o in before if o["metadata"]["name"] == "triage-v3-config")
    config = TrainerConfig.model_validate(yaml.safe_load(cm["data"]["trainer.yaml"]))
    assert config.base_model == "s3://models/biomistral-7b/"
    assert config.output == "s3://models/finetunes/ml/triage-v3/"
    assert config.training.max_steps == 50 and config.training.epochs == 1
    assert config.quantization is not None and config.quantization.type == "nf4"  # qlora default
    assert config.progress is not None and config.progress.config_map == "triage-v3-progress"
    assert cm["immutable"] is True


def test_job_shape() -> None:
    _, job = _build(
        {
            **valid_spec(),
            "backoffLimit": 3,
            "podAnnotations": {"a": "b"},
            "baseModel": {"uri": "s3://models/m/", "secretRef": {"name": "hf"}},
            "dataset": {"uri": "s3://data/d/", "secretRef": {"name": "s3-creds"}},
            "output": {"uri": "s3://models/out/", "secretRef": {"name": "s3-creds"}},
        },
        trainer_image="registry/trainer:1",
        s3_endpoint_url="http://minio:9000",
    )
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert job["metadata"]["name"] == "triage-v3"
    assert job["metadata"]["ownerReferences"][0] | {} == {
        "apiVersion": "healthnav.io/v1alpha1",
        "kind": "FineTuneJob",
        "name": "triage-v3",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert container["image"] == "registry/trainer:1"
    assert container["command"] == ["hnav", "train", "--config", "/etc/healthnav/trainer.yaml"]
    assert (
        container["resources"]["requests"]["nvidia.com/gpu"]
        == container["resources"]["limits"]["nvidia.com/gpu"]
        == "1"
    )
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["envFrom"] == [{"secretRef": {"name": "hf"}}, {"secretRef": {"name": "s3-creds"}}]
    assert {"name": "AWS_ENDPOINT_URL_S3", "value": "http://minio:9000"} in container["env"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "triage-v3-trainer"
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (3, 86400)
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["podReplacementPolicy"] == "Failed"
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["values"] == [EXIT_CONFIG_ERROR]
    labels = spec["template"]["metadata"]["labels"]
    assert labels[FTJ_LABEL] == "triage-v3" and labels["app.kubernetes.io/managed-by"] == "healthnav-operator"
    assert spec["template"]["metadata"]["annotations"] == {"a": "b"}
    assert spec["suspend"] is False and KUEUE_QUEUE_LABEL not in job["metadata"]["labels"]


def test_kueue_queue_starts_suspended_with_label() -> None:
    _, job = _build({**valid_spec(), "queueName": "gpu-training"})
    assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-training"
    assert job["spec"]["template"]["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-training"
    assert job["spec"]["suspend"] is True


def test_least_privilege_progress_role() -> None:
    before, job = _build()
    kinds = {o["kind"]: o for o in before}
    (rule,) = kinds["Role"]["rules"]
    assert rule == {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": ["triage-v3-progress"],
        "verbs": ["get", "patch", "update"],
    }
    assert kinds["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "triage-v3-trainer", "namespace": "ml"}
    ]
    # A user-provided account (IRSA / Workload Identity) is bound instead of creating one.
    before, job = _build({**valid_spec(), "serviceAccountName": "irsa-trainer"})
    assert "ServiceAccount" not in {o["kind"] for o in before}
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "irsa-trainer"
    assert next(o for o in before if o["kind"] == "RoleBinding")["subjects"][0]["name"] == "irsa-trainer"


def test_placement_merges_operator_defaults_with_the_spec() -> None:
    _, job = _build(
        {
            **valid_spec(),
            "resources": {
                "gpus": 2,
                "gpuType": "nvidia-a10g",
                "nodeSelector": {"pool": "mine"},
                "tolerations": [{"key": "spot", "operator": "Exists"}],
            },
        },
        default_node_selector={"pool": "default", "zone": "a"},
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "mine", "zone": "a"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists"},
    ]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert [t["matchExpressions"][0]["key"] for t in terms] == [
        "cloud.google.com/gke-accelerator",
        "k8s.amazonaws.com/accelerator",
    ]


def test_affinity_and_is_a_cross_product_of_terms() -> None:
    user = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                ]
            }
        }
    }
    merged = merge_affinity(user, None, "nvidia-l4", ["l1", "l2"])
    assert merged is not None
    terms = merged["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 4
    assert [[e["key"] for e in t["matchExpressions"]] for t in terms] == [["zone", "l1"], ["zone", "l2"]] * 2
    assert user["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchExpressions"
    ] == [{"key": "zone", "operator": "In", "values": ["a"]}]  # input not mutated
    assert merge_affinity(None, None, None, ["l1"]) is None
    assert merge_tolerations([{"key": "a", "value": None}], [{"key": "a"}]) == [{"key": "a"}]


def test_missing_output_everywhere_is_a_clear_error() -> None:
    spec = valid_spec()
    del spec["output"]
    with pytest.raises(ValueError, match="HEALTHNAV_DEFAULT_OUTPUT_URI"):
        _build(spec)
    before, _ = _build(spec, default_output_uri="s3://fallback/ft/")
    cm = next(o for o in before if o["metadata"]["name"] == "triage-v3-config")
    assert "output: s3://fallback/ft/ml/triage-v3/" in cm["data"]["trainer.yaml"]

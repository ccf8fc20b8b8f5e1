"""Pure builders: FineTuneJob (+ operator settings) → the Kubernetes objects that run it.

No I/O here, so every field of every object is unit-tested without a cluster. The handlers
only create what these functions return.

Objects per FineTuneJob ``<name>`` (all owned by it, so deleting it cleans up):

* ConfigMap ``<name>-config``: the rendered :class:`~healthnav.trainer.config.TrainerConfig`
  (``trainer.yaml``), exactly the schema ``hnav train --config`` reads;
* ConfigMap ``<name>-progress``: where the trainer publishes progress;
* ServiceAccount ``<name>-trainer`` (unless ``spec.serviceAccountName`` names one), and a Role +
  RoleBinding ``<name>-progress`` letting that account get/patch **only** the progress
  ConfigMap (``resourceNames``): the trainer cannot read Secrets, list pods, or touch status;
* batch/v1 Job ``<name>``: deterministic name, so a restarted operator finds the Job it
  created instead of creating a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from healthnav.contracts.errors import EXIT_CONFIG_ERROR
from healthnav.contracts.run_output import RunOutput
from healthnav.operator.child_objects import (
    container_security_context,
    controller_reference,
    merge_affinity,
    merge_node_selector,
    merge_tolerations,
    owned_metadata,
    pod_security_context,
    recommended_labels,
)
from healthnav.operator.finetunejob_spec import API_VERSION, KIND, FineTuneJobSpec
from healthnav.operator.settings import OperatorSettings
from healthnav.trainer.config import ProgressTarget, TrainerConfig

TRAINER_CONTAINER = "trainer"
CONFIG_MOUNT = "/etc/healthnav"
CONFIG_KEY = "trainer.yaml"
CONFIG_PATH = f"{CONFIG_MOUNT}/{CONFIG_KEY}"
WORKSPACE = "/workspace"

# Labels: the recommended app.kubernetes.io set plus our own selector label, which the operator
# watches with a server-side label selector (it never sees unrelated pods or ConfigMaps).
FTJ_LABEL = "healthnav.io/finetunejob"
ROLE_LABEL = "healthnav.io/role"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


@dataclass(frozen=True)
class Names:
    """Names of everything derived from one FineTuneJob."""

    name: str
    namespace: str

    @property
    def job(self) -> str:
        return self.name

    @property
    def config_map(self) -> str:
        return f"{self.name}-config"

    @property
    def progress_config_map(self) -> str:
        return f"{self.name}-progress"

    @property
    def service_account(self) -> str:
        return f"{self.name}-trainer"

    @property
    def role(self) -> str:
        return f"{self.name}-progress"


def labels(name: str, role: str) -> dict[str, str]:
    return {**recommended_labels("healthnav-trainer", name, role), FTJ_LABEL: name, ROLE_LABEL: role}


def owner_reference(ftj: dict[str, Any]) -> dict[str, Any]:
    """The FineTuneJob as controller owner: garbage collection deletes children with it."""
    return controller_reference(API_VERSION, KIND, ftj)


def _meta(
    ftj: dict[str, Any], name: str, role: str, extra_labels: dict[str, str] | None = None
) -> dict[str, Any]:
    child_labels = {**labels(ftj["metadata"]["name"], role), **(extra_labels or {})}
    return owned_metadata(ftj, name, child_labels, owner_reference(ftj))


def run_output(
    spec: FineTuneJobSpec, settings: OperatorSettings, namespace: str, name: str
) -> RunOutput | None:
    """This run's prefix, ``<root>/<namespace>/<name>/`` under the spec's output root or the
    operator's default; None when neither is set."""
    root = spec.output.uri if spec.output else settings.default_output_uri
    return RunOutput.for_job(root, namespace, name) if root else None


def trainer_config(
    spec: FineTuneJobSpec, settings: OperatorSettings, namespace: str, name: str
) -> TrainerConfig:
    """The trainer's config for this FineTuneJob: the same models, nothing re-invented."""
    output = run_output(spec, settings, namespace, name)
    if output is None:
        raise ValueError(
            "spec.output.uri is not set and the operator has no default output URI "
            "(HEALTHNAV_DEFAULT_OUTPUT_URI)"
        )
    return TrainerConfig(
        base_model=spec.base_model.uri,
        dataset=spec.dataset.uri,
        output=str(output),
        method=spec.method,
        lora=spec.lora,
        quantization=spec.quantization,
        training=spec.training,
        run_name=f"{namespace}/{name}",
        progress=ProgressTarget(namespace=namespace, config_map=Names(name, namespace).progress_config_map),
        # The training pod evaluates and gates right after training (<output>/eval/metrics.json).
        evaluation=spec.evaluation.gates if spec.evaluation else None,
    )


def config_map(ftj: dict[str, Any], config: TrainerConfig) -> dict[str, Any]:
    names = Names(ftj["metadata"]["name"], ftj["metadata"]["namespace"])
    body = yaml.safe_dump(config.to_dict(exclude_none=True), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(ftj, names.config_map, "config"),
        "data": {CONFIG_KEY: body},
        # The trainer config of a started run must not change under it.
        "immutable": True,
    }


def progress_config_map(ftj: dict[str, Any]) -> dict[str, Any]:
    names = Names(ftj["metadata"]["name"], ftj["metadata"]["namespace"])
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(ftj, names.progress_config_map, "progress"),
        "data": {},
    }


def service_account_name(ftj: dict[str, Any], spec: FineTuneJobSpec) -> str:
    return (
        spec.service_account_name
        or Names(ftj["metadata"]["name"], ftj["metadata"]["namespace"]).service_account
    )


def service_account(ftj: dict[str, Any]) -> dict[str, Any]:
    names = Names(ftj["metadata"]["name"], ftj["metadata"]["namespace"])
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(ftj, names.service_account, "trainer"),
    }


def progress_role(ftj: dict[str, Any]) -> dict[str, Any]:
    """get/patch on exactly one ConfigMap: the least privilege that lets the trainer report."""
    names = Names(ftj["metadata"]["name"], ftj["metadata"]["namespace"])
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(ftj, names.role, "progress"),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [names.progress_config_map],
                "verbs": ["get", "patch", "update"],
            }
        ],
    }


def progress_role_binding(ftj: dict[str, Any], spec: FineTuneJobSpec) -> dict[str, Any]:
    names = Names(ftj["metadata"]["name"], ftj["metadata"]["namespace"])
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(ftj, names.role, "progress"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names.role},
        "subjects": [
            {"kind": "ServiceAccount", "name": service_account_name(ftj, spec), "namespace": names.namespace}
        ],
    }


def _env(settings: OperatorSettings, namespace: str, name: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "HEALTHNAV_FINETUNEJOB", "value": f"{namespace}/{name}"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        # Read-only root file system: everything writable lives on the workspace volume.
        {"name": "HOME", "value": WORKSPACE},
        {"name": "HF_HOME", "value": f"{WORKSPACE}/.cache/huggingface"},
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    env += settings.storage_env()
    return env


def _env_from(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    """Secrets named by secretRef become env vars; none → the ServiceAccount's cloud identity."""
    names: list[str] = []
    for ref in (
        spec.base_model.secret_ref,
        spec.dataset.secret_ref,
        spec.output.secret_ref if spec.output else None,
    ):
        if ref is not None and ref.name not in names:
            names.append(ref.name)
    return [{"secretRef": {"name": n}} for n in names]


def job(ftj: dict[str, Any], spec: FineTuneJobSpec, settings: OperatorSettings) -> dict[str, Any]:
    """The batch/v1 Job that runs ``hnav train`` on a GPU node."""
    meta = ftj["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    names = Names(name, namespace)
    res = spec.resources
    extra_labels = {KUEUE_QUEUE_LABEL: spec.queue_name} if spec.queue_name else {}
    pod_labels = {**labels(name, "trainer"), **extra_labels}

    quantities: dict[str, str] = {"cpu": str(res.cpu), "memory": str(res.memory)}
    limits: dict[str, str] = {"memory": str(res.memory)}
    if res.gpus:
        quantities["nvidia.com/gpu"] = str(res.gpus)
        limits["nvidia.com/gpu"] = str(res.gpus)

    container: dict[str, Any] = {
        "name": TRAINER_CONTAINER,
        "image": settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["hnav", "train", "--config", CONFIG_PATH],
        "env": _env(settings, namespace, name),
        "resources": {"requests": quantities, "limits": limits},
        "securityContext": container_security_context(read_only_root=True),
        # The trainer writes a one-line reason to /dev/termination-log; if it crashes before
        # that, the tail of its log becomes the message the operator reports.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "workspace", "mountPath": WORKSPACE},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    env_from = _env_from(spec)
    if env_from:
        container["envFrom"] = env_from

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": service_account_name(ftj, spec),
        # The token is needed for the progress ConfigMap (and IRSA / Workload Identity).
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        # Time for the trainer to write a checkpoint on SIGTERM (preemption, suspend).
        "terminationGracePeriodSeconds": 120,
        "securityContext": pod_security_context(settings),
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": names.config_map}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(res.shm_size)}},
            {"name": "workspace", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    node_selector = merge_node_selector(settings.default_node_selector, res.node_selector)
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = merge_tolerations(
        settings.default_tolerations,
        [t.model_dump(by_alias=True, exclude_none=True) for t in res.tolerations],
    )
    if tolerations:
        pod_spec["tolerations"] = tolerations
    affinity = merge_affinity(res.affinity, settings.default_affinity, res.gpu_type, settings.gpu_type_labels)
    if affinity:
        pod_spec["affinity"] = affinity
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]

    template_meta: dict[str, Any] = {"labels": pod_labels}
    if spec.pod_annotations:
        template_meta["annotations"] = dict(spec.pod_annotations)

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(ftj, names.job, "trainer", extra_labels),
        "spec": {
            # With Kueue the Job starts suspended and Kueue un-suspends it on admission.
            "suspend": bool(spec.suspend or spec.queue_name),
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": spec.backoff_limit,
            "activeDeadlineSeconds": spec.active_deadline_seconds,
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            # A replacement pod starts only once the failed one is fully gone: two trainers
            # must never write checkpoints to the same prefix at once.
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": {
                "rules": [
                    # Node drain, preemption, eviction: not the trainer's fault, not a retry.
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                    # Bad config or corrupt dataset: retrying only burns GPU hours.
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": TRAINER_CONTAINER,
                            "operator": "In",
                            "values": [EXIT_CONFIG_ERROR],
                        },
                    },
                ]
            },
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def children(
    ftj: dict[str, Any], spec: FineTuneJobSpec, settings: OperatorSettings
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Everything to create before the Job (which needs them to start), and the Job."""
    meta = ftj["metadata"]
    config = trainer_config(spec, settings, meta["namespace"], meta["name"])
    before = [
        config_map(ftj, config),
        progress_config_map(ftj),
        progress_role(ftj),
        progress_role_binding(ftj, spec),
    ]
    if not spec.service_account_name:
        before.insert(0, service_account(ftj))
    return before, job(ftj, spec, settings)

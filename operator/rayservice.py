"""Pure builders: ModelServe (+ resolved adapters + operator settings) → KubeRay objects.

No I/O here, so every field is unit-tested without a cluster; the controller only applies
what these functions return.

How a change reaches the running model is decided by *where* it lands in the RayService,
because that is how KubeRay (v1.1+) decides:

* ``spec.serveConfigV2`` only (adapters added or removed, autoscaling, model name): KubeRay
  sends the new config to the running Serve controller — an in-place update of the Ray Serve
  application on the same RayCluster, no new pods, no downtime;
* ``spec.rayClusterConfig`` (image, resources, placement): KubeRay's ``NewCluster`` upgrade
  prepares a second RayCluster, waits until its application is RUNNING, then switches the
  serve Service over (zero downtime, but it needs spare GPUs for a while).

Base model, engine and engine arguments live in serveConfigV2's args, yet an in-place Serve
update would restart the engine replicas on the same GPUs, where two copies of a 7B model
usually do not fit. Their hash is therefore also written as a pod-template annotation
(``healthnav.io/serving-revision``), which changes KubeRay's cluster-spec hash and forces the
new-cluster path. Worker ``replicas``/``minReplicas``/``maxReplicas`` are excluded from that
hash by KubeRay, so autoscaling changes stay in place.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import yaml

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
from healthnav.operator.modelserve_spec import API_VERSION, KIND, MAX_NAME_LENGTH, ModelServeSpec
from healthnav.operator.schedule import ActiveCapacity, ModelServeAutoscaling
from healthnav.operator.settings import OperatorSettings
from healthnav.serving.config import IMPORT_PATH, SERVE_ENV, AdapterRef, ServeAppConfig, SpilloverConfig

RAY_API_VERSION = "ray.io/v1"
RAY_SERVICE_KIND = "RayService"
RAY_SERVICE_PLURAL = "rayservices"
APP_NAME = "healthnav"
"""The Ray Serve application's name in serveConfigV2 (and in KubeRay's applicationStatuses)."""
SERVE_PORT = 8000
WORKER_GROUP = "gpu"
MS_LABEL = "healthnav.io/modelserve"
REVISION_ANNOTATION = "healthnav.io/serving-revision"
DESIRED_HASH_ANNOTATION = "healthnav.io/desired-hash"
API_KEYS_ENV = "HEALTHNAV_API_KEYS"
SPILLOVER_KEY_ENV = "HEALTHNAV_SPILLOVER_API_KEY"
"""Environment variable of the Ray pods holding the spillover upstream's API key (a secretKeyRef)."""
HEAD_CONTAINER = "ray-head"
WORKER_CONTAINER = "ray-worker"


@dataclass(frozen=True)
class ResolvedAdapter:
    """An adapter whose location is known (a uri entry, or a finished FineTuneJob's output)."""

    name: str
    uri: str


def ray_service_name(modelserve_name: str) -> str:
    """The RayService carries the ModelServe's name (≤ KubeRay's 47-character limit by CEL)."""
    if len(modelserve_name) > MAX_NAME_LENGTH:
        raise ValueError(f"metadata.name must be at most {MAX_NAME_LENGTH} characters for KubeRay")
    return modelserve_name


def serve_service_name(modelserve_name: str) -> str:
    """KubeRay's serve Service: ``<rayservice>-serve-svc``, stable across cluster upgrades."""
    return f"{ray_service_name(modelserve_name)}-serve-svc"


def endpoint(modelserve_name: str, namespace: str) -> str:
    return f"http://{serve_service_name(modelserve_name)}.{namespace}.svc:{SERVE_PORT}"


def service_account_name(modelserve_name: str, spec: ModelServeSpec) -> str:
    return spec.service_account_name or f"{modelserve_name}-serve"


def labels(name: str, role: str) -> dict[str, str]:
    return {**recommended_labels("healthnav-serving", name, role), MS_LABEL: name}


def owner_reference(ms: dict[str, Any]) -> dict[str, Any]:
    """The ModelServe as controller owner: deleting it deletes the RayService (and KubeRay its clusters)."""
    return controller_reference(API_VERSION, KIND, ms)


def _owned_meta(ms: dict[str, Any], name: str) -> dict[str, Any]:
    return owned_metadata(ms, name, labels(ms["metadata"]["name"], "serving"), owner_reference(ms))


def image(spec: ModelServeSpec, settings: OperatorSettings) -> str:
    return spec.image or settings.serving_image


def spec_at(spec: ModelServeSpec, capacity: ActiveCapacity) -> ModelServeSpec:
    """``spec`` with the replica bounds in force now (:mod:`healthnav.operator.schedule`): what the
    builders below render, so the Serve config and the worker group follow the schedule."""
    if spec.autoscaling.schedule is None:
        return spec
    bounds = ModelServeAutoscaling.model_validate(capacity.autoscaling.model_dump())
    return spec.model_copy(update={"autoscaling": bounds})


def serve_app_config(spec: ModelServeSpec, adapters: list[ResolvedAdapter]) -> ServeAppConfig:
    """The serving application's arguments: the server's own schema, nothing re-invented.

    ``adaptersPrefix`` stays unset on purpose: discovery by name under a prefix would keep
    serving an adapter after it was removed from the ModelServe.
    """
    return ServeAppConfig(
        model_name=spec.model_name,
        base_model=spec.base_model.uri,
        engine=spec.engine,
        engine_args=spec.engine_args,
        adapters=[AdapterRef(name=a.name, uri=a.uri) for a in adapters],
        autoscaling=spec.autoscaling.for_serving(),
        num_gpus_per_replica=spec.resources.gpus_per_replica,
        # ≥ 1 CPU keeps model replicas off the head, which advertises num-cpus 0.
        num_cpus_per_replica=1,
        api_keys_env=API_KEYS_ENV if spec.api_key_secret_ref else None,
        adapters_prefix=None,
        spillover=spillover_config(spec),
    )


def spillover_config(spec: ModelServeSpec) -> SpilloverConfig | None:
    """The server's spillover settings: the upstream's key by environment variable name only, so
    the key itself stays in its Secret (the serve config is readable by anyone who can read the
    RayService)."""
    if spec.spillover is None:
        return None
    s = spec.spillover
    return SpilloverConfig(
        base_url=s.upstream.base_url,
        model=s.upstream.model,
        api_key_env=SPILLOVER_KEY_ENV,
        when=list(s.when),
        weight=s.weight,
    )


def serve_config_v2(app: ServeAppConfig) -> str:
    """The RayService's ``serveConfigV2`` (a YAML string, the Ray Serve config file format).

    Without spillover the ``spillover`` key is left out rather than written as null, so a
    ModelServe that does not use it keeps the serve config it had before the field existed (an
    operator upgrade must not update every running application).
    """
    args = app.to_dict()
    if app.spillover is None:
        del args["spillover"]
    doc = {
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": args,
            }
        ]
    }
    return yaml.safe_dump(doc, sort_keys=False, width=1000)


def serving_revision(spec: ModelServeSpec, settings: OperatorSettings) -> str:
    """Hash of what must change only through a new Ray cluster (see the module docstring)."""
    doc = {
        "baseModel": spec.base_model.uri,
        "engine": spec.engine,
        "engineArgs": spec.engine_args.to_dict(),
        "image": image(spec, settings),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _env(
    ms_name: str, namespace: str, spec: ModelServeSpec, settings: OperatorSettings
) -> list[dict[str, Any]]:
    """Environment of the Ray head and worker containers.

    Starts with the serving layer's Ray Serve settings (:data:`SERVE_ENV`): Ray's proxy and
    replicas read them once, when their processes start, so they must be in the pod's own
    environment — the Serve application cannot set them for itself.
    """
    env: list[dict[str, Any]] = [{"name": key, "value": value} for key, value in SERVE_ENV.items()]
    env += [
        {"name": "HEALTHNAV_MODELSERVE", "value": f"{namespace}/{ms_name}"},
        {"name": "HF_HOME", "value": "/tmp/huggingface"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    env += settings.storage_env()
    if spec.api_key_secret_ref:
        ref = spec.api_key_secret_ref
        env.append({"name": API_KEYS_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    if spec.spillover:
        key = spec.spillover.upstream.api_key_secret_ref
        env.append(
            {"name": SPILLOVER_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": key.name, "key": key.key}}}
        )
    return env


def _env_from(spec: ModelServeSpec) -> list[dict[str, Any]]:
    """Credentials for the base model's location; none → the ServiceAccount's cloud identity."""
    ref = spec.base_model.secret_ref
    return [{"secretRef": {"name": ref.name}}] if ref else []


def _container(
    name: str,
    image_ref: str,
    settings: OperatorSettings,
    env: list[dict[str, Any]],
    env_from: list[dict[str, Any]],
    requests: dict[str, str],
    limits: dict[str, str],
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image_ref,
        "imagePullPolicy": settings.image_pull_policy,
        "env": env,
        "resources": {"requests": requests, "limits": limits},
        "securityContext": container_security_context(read_only_root=False),
    }
    if env_from:
        container["envFrom"] = env_from
    return container


def _pod_spec(
    sa: str, containers: list[dict[str, Any]], settings: OperatorSettings, volumes: list[dict[str, Any]]
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": sa,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(settings),
        "containers": containers,
    }
    if volumes:
        spec["volumes"] = volumes
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    return spec


def _head_pod_spec(
    name: str, spec: ModelServeSpec, settings: OperatorSettings, container: dict[str, Any]
) -> dict[str, Any]:
    pod_spec = _pod_spec(service_account_name(name, spec), [container], settings, [])
    if spec.resources.head_node_selector:
        pod_spec["nodeSelector"] = dict(spec.resources.head_node_selector)
    return pod_spec


def head_group(
    ms: dict[str, Any], spec: ModelServeSpec, settings: OperatorSettings, revision: str
) -> dict[str, Any]:
    """Ray head: GCS, Serve controller and an HTTP proxy, but never a model replica.

    It advertises ``num-cpus: 0`` and ``num-gpus: 0`` to Ray, so no actor that needs a CPU or
    GPU (every model replica does) can be placed there; it needs no GPU node either.
    """
    name, namespace = ms["metadata"]["name"], ms["metadata"]["namespace"]
    res = spec.resources
    container = _container(
        HEAD_CONTAINER,
        image(spec, settings),
        settings,
        _env(name, namespace, spec, settings),
        _env_from(spec),
        {"cpu": str(res.head_cpu), "memory": str(res.head_memory)},
        {"memory": str(res.head_memory)},
    )
    container["ports"] = [
        {"name": "gcs-server", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
        {"name": "serve", "containerPort": SERVE_PORT},
    ]
    return {
        "rayStartParams": {"num-cpus": "0", "num-gpus": "0", "dashboard-host": "0.0.0.0"},
        "serviceType": "ClusterIP",
        "template": {
            "metadata": {"labels": labels(name, "ray-head"), "annotations": {REVISION_ANNOTATION: revision}},
            "spec": _head_pod_spec(name, spec, settings, container),
        },
    }


def worker_group(
    ms: dict[str, Any], spec: ModelServeSpec, settings: OperatorSettings, revision: str
) -> dict[str, Any]:
    """GPU workers: one pod per model replica, scaled by Ray's autoscaler between min and max."""
    name, namespace = ms["metadata"]["name"], ms["metadata"]["namespace"]
    res = spec.resources
    requests = {"cpu": str(res.cpu), "memory": str(res.memory)}
    limits = {"memory": str(res.memory)}
    if res.gpus_per_replica:
        requests["nvidia.com/gpu"] = str(res.gpus_per_replica)
        limits["nvidia.com/gpu"] = str(res.gpus_per_replica)
    container = _container(
        WORKER_CONTAINER,
        image(spec, settings),
        settings,
        _env(name, namespace, spec, settings),
        _env_from(spec),
        requests,
        limits,
    )
    container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    pod_spec = _pod_spec(
        service_account_name(name, spec),
        [container],
        settings,
        [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(res.shm_size)}}],
    )
    node_selector = merge_node_selector(settings.default_node_selector, res.node_selector)
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = merge_tolerations(
        settings.default_tolerations if res.gpus_per_replica else [],
        [t.model_dump(by_alias=True, exclude_none=True) for t in res.tolerations],
    )
    if tolerations:
        pod_spec["tolerations"] = tolerations
    # gpuType → the same node-affinity terms (GKE/EKS accelerator labels) as FineTuneJob pods.
    affinity = merge_affinity(None, settings.default_affinity, res.gpu_type, settings.gpu_type_labels)
    if affinity:
        pod_spec["affinity"] = affinity
    a = spec.autoscaling
    return {
        "groupName": WORKER_GROUP,
        "replicas": a.min_replicas,
        "minReplicas": a.min_replicas,
        "maxReplicas": a.max_replicas,
        "rayStartParams": {},
        "template": {
            "metadata": {
                "labels": labels(name, "ray-worker"),
                "annotations": {REVISION_ANNOTATION: revision},
            },
            "spec": pod_spec,
        },
    }


def ray_service(
    ms: dict[str, Any],
    spec: ModelServeSpec,
    adapters: list[ResolvedAdapter],
    settings: OperatorSettings,
) -> dict[str, Any]:
    """The ``ray.io/v1`` RayService running the healthnav Serve application for ``ms``."""
    meta = ms["metadata"]
    name = meta["name"]
    revision = serving_revision(spec, settings)
    app = serve_app_config(spec, adapters)
    body: dict[str, Any] = {
        "apiVersion": RAY_API_VERSION,
        "kind": RAY_SERVICE_KIND,
        "metadata": {
            **_owned_meta(ms, ray_service_name(name)),
            "annotations": {REVISION_ANNOTATION: revision},
        },
        "spec": {
            "serveConfigV2": serve_config_v2(app),
            # Zero-downtime: a changed cluster spec is rolled out on a second cluster.
            "upgradeStrategy": {"type": "NewCluster"},
            "rayClusterConfig": {
                "rayVersion": settings.ray_version,
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {
                    "upscalingMode": "Default",
                    # GPU pods idle after Serve scaled replicas down are released after this.
                    "idleTimeoutSeconds": 120,
                    "resources": {
                        "requests": {"cpu": "200m", "memory": "256Mi"},
                        "limits": {"memory": "512Mi"},
                    },
                },
                "headGroupSpec": head_group(ms, spec, settings, revision),
                "workerGroupSpecs": [worker_group(ms, spec, settings, revision)],
            },
        },
    }
    body["metadata"]["annotations"][DESIRED_HASH_ANNOTATION] = desired_hash(body)
    return body


def desired_hash(body: dict[str, Any]) -> str:
    """Hash of what the operator applies (minus this annotation): equal hash → skip the write."""
    doc = json.loads(json.dumps(body))
    doc["metadata"].get("annotations", {}).pop(DESIRED_HASH_ANNOTATION, None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def service_account(ms: dict[str, Any]) -> dict[str, Any]:
    """``<name>-serve``: the Ray pods' identity (KubeRay binds the autoscaler's Role to it too).

    Annotate it — or name your own with spec.serviceAccountName — for IRSA / Workload Identity.
    """
    name = ms["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _owned_meta(ms, f"{name}-serve"),
    }


def adapters_in(ray_service_body: dict[str, Any] | None) -> dict[str, str]:
    """{name: uri} of the adapters a RayService's serveConfigV2 routes to (empty when unreadable)."""
    if not ray_service_body:
        return {}
    try:
        doc = yaml.safe_load((ray_service_body.get("spec") or {}).get("serveConfigV2") or "") or {}
        for app in doc.get("applications") or []:
            if app.get("name") == APP_NAME:
                return {a["name"]: a["uri"] for a in (app.get("args") or {}).get("adapters") or []}
    except (yaml.YAMLError, AttributeError, KeyError, TypeError):
        return {}
    return {}

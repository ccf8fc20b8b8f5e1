"""A small JSON-over-REST Kubernetes client for the operator's writes (any kind, plain dicts).

Why not the typed ``kubernetes`` APIs: they deserialise every response into generated model
classes (slow, memory-hungry for Jobs and pods, and lossy for custom resources); the operator
works with plain dicts that the manifest builders produce. Authentication, TLS and token
refresh still come from the official client's configuration (kubeconfig, in-cluster
ServiceAccount, exec plugins), so nothing security-relevant is re-implemented here.

Calls are blocking; the async handlers run them in a thread pool (:meth:`Kube.run`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from healthnav.contracts.errors import HealthnavError

T = TypeVar("T")

# (apiVersion, kind) -> plural, for the kinds the operators create.
PLURALS: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "namespaces",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Secret"): "secrets",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "Pod"): "pods",
    ("v1", "Event"): "events",
    ("v1", "Service"): "services",
    ("batch/v1", "Job"): "jobs",
    ("rbac.authorization.k8s.io/v1", "Role"): "roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "clusterroles",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "clusterrolebindings",
    ("healthnav.io/v1alpha1", "FineTuneJob"): "finetunejobs",
    ("healthnav.io/v1alpha1", "ModelServe"): "modelserves",
    ("ray.io/v1", "RayService"): "rayservices",
}

FIELD_MANAGER = "healthnav-operator"


class KubeError(HealthnavError, RuntimeError):
    """An API request failed; ``status`` is the HTTP code (0: no response), ``body`` the Status."""

    def __init__(self, status: int, reason: str, body: dict[str, Any] | None = None) -> None:
        self.status = status
        self.reason = reason
        self.body = body or {}
        super().__init__(f"{status} {reason}: {self.body.get('message', '')}".strip())

    @property
    def is_conflict(self) -> bool:
        return self.status == 409

    @property
    def is_not_found(self) -> bool:
        return self.status == 404

    @property
    def is_already_exists(self) -> bool:
        return self.status == 409 and self.body.get("reason") == "AlreadyExists"


def path_for(api_version: str, plural: str, namespace: str | None = None, name: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{plural}"
    if name:
        base += f"/{quote(name)}"
    return base


def object_path(obj: dict[str, Any], with_name: bool = True) -> str:
    plural = PLURALS[(obj["apiVersion"], obj["kind"])]
    meta = obj["metadata"]
    return path_for(obj["apiVersion"], plural, meta.get("namespace"), meta["name"] if with_name else None)


class Kube:
    """Blocking JSON requests with the official client's auth; one connection pool, thread-safe.

    Two thread pools: :meth:`run` for ordinary calls and :meth:`run_urgent` for the few calls a
    user waits on (creating a training Job). Under a burst the ordinary pool fills with the
    follow-up work of earlier objects (children, status, reads); a FIFO shared with it would
    put the next object's Job behind all of that. The ordinary pool is also kept smaller than
    the urgent one, so the follow-up work cannot crowd the API server out from under the Jobs.
    """

    def __init__(self, api_client: Any, max_workers: int = 32, urgent_workers: int | None = None) -> None:
        self.api = api_client
        urgent_workers = urgent_workers or max_workers
        self.api.configuration.connection_pool_maxsize = max(
            getattr(self.api.configuration, "connection_pool_maxsize", 4) or 4, max_workers + urgent_workers
        )
        self.executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="kube")
        self.urgent_executor = ThreadPoolExecutor(urgent_workers, thread_name_prefix="kube-urgent")

    @classmethod
    def from_environment(cls, max_workers: int = 32, urgent_workers: int | None = None) -> Kube:
        """In-cluster ServiceAccount when running in a pod, else $KUBECONFIG / ~/.kube/config."""
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
        # The pool's size is fixed when the ApiClient is built: one connection per thread.
        configuration.connection_pool_maxsize = max_workers + (urgent_workers or max_workers)
        return cls(client.ApiClient(configuration), max_workers=max_workers, urgent_workers=urgent_workers)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def run_urgent(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like :meth:`run`, in the pool that ordinary calls never queue in."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.urgent_executor, lambda: fn(*args, **kwargs))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        resource_path = path + (f"?{urlencode(query)}" if query else "")
        _, url, hdrs, _, _ = self.api.param_serialize(
            method=method,
            resource_path=resource_path,
            header_params={"Content-Type": content_type, "Accept": "application/json", **(headers or {})},
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(method, url, header_params=hdrs, body=body, _request_timeout=timeout)
        except ApiException as exc:  # transport-level failure
            raise KubeError(exc.status or 0, str(exc.reason)) from exc
        response.read()
        data = response.data or b"{}"
        try:
            doc = json.loads(data)
        except ValueError:
            doc = {"message": data[:500].decode("utf-8", "replace")}
        if response.status >= 400:
            raise KubeError(response.status, response.reason or "", doc if isinstance(doc, dict) else None)
        return doc

    # --- conveniences -------------------------------------------------------------------

    def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        return self.request("GET", path_for(api_version, plural, namespace, name))

    def get_or_none(
        self, api_version: str, plural: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            return self.get(api_version, plural, namespace, name)
        except KubeError as exc:
            if exc.is_not_found:
                return None
            raise

    def list(
        self, api_version: str, plural: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        return self.request("GET", path_for(api_version, plural, namespace), query=query).get("items", [])

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self.request(
            "POST", object_path(obj, with_name=False), body=obj, query={"fieldManager": FIELD_MANAGER}
        )

    def create_or_get(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(object, created). An existing object of that name is returned untouched: names are
        deterministic, so "exists" means "an earlier reconcile (maybe a previous operator
        process) created it" — the reason a restart can never produce a second Job."""
        try:
            return self.create(obj), True
        except KubeError as exc:
            if not exc.is_already_exists:
                raise
        return self.request("GET", object_path(obj)), False

    def merge_patch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        subresource: str = "",
    ) -> dict[str, Any]:
        path = path_for(api_version, plural, namespace, name) + (f"/{subresource}" if subresource else "")
        return self.request(
            "PATCH",
            path,
            body=patch,
            content_type="application/merge-patch+json",
            query={"fieldManager": FIELD_MANAGER},
        )

    def delete(
        self, api_version: str, plural: str, namespace: str | None, name: str, propagation: str = "Background"
    ) -> None:
        try:
            self.request(
                "DELETE",
                path_for(api_version, plural, namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation},
            )
        except KubeError as exc:
            if not exc.is_not_found:
                raise

    def post_event(
        self, involved: dict[str, Any], type_: str, reason: str, message: str, component: str = FIELD_MANAGER
    ) -> None:
        """A core/v1 Event about ``involved`` (what ``kubectl describe`` shows)."""
        meta = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason[:128],
            "message": message[:1024],
            "type": type_,
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.request("POST", path_for("v1", "events", meta["namespace"]), body=event)

    def can_i(self, verb: str, resource: str, group: str = "", namespace: str | None = None) -> bool:
        """Whether this client's identity may ``verb`` ``resource`` (a SelfSubjectAccessReview:
        the API server's own authorizer answers, and every authenticated identity may ask)."""
        attributes: dict[str, str] = {"verb": verb, "resource": resource, "group": group}
        if namespace:
            attributes["namespace"] = namespace
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        answer = self.request(
            "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=review, timeout=10.0
        )
        return bool((answer.get("status") or {}).get("allowed"))

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.urgent_executor.shutdown(wait=False, cancel_futures=True)
        self.api.close()

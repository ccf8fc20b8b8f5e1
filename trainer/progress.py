"""Progress reporting: JSON lines on stdout, and the FineTuneJob's progress ConfigMap.

The trainer pod may patch exactly one ConfigMap (its Role is limited by resourceNames), whose
``data.progress`` holds the :class:`~healthnav.contracts.progress.TrainingProgress` payload the
operator mirrors into ``FineTuneJob.status.progress``. Reporting must never break training: an
API server that is down, a missing RBAC rule or an absent kubeconfig cost a warning, not the
run. Patches are throttled so a fast trainer does not hammer the API server.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from typing import Any, TextIO

from healthnav.contracts.progress import TrainingProgress
from healthnav.trainer.config import ProgressTarget

log = logging.getLogger(__name__)


class ConfigMapProgressReporter:
    """Patches ``data.progress`` of one ConfigMap, at most every ``min_interval`` seconds."""

    def __init__(self, target: ProgressTarget, min_interval: float = 10.0, api: Any = None) -> None:
        self.target = target
        self.min_interval = min_interval
        self._api = api
        self._last_sent = -math.inf
        self._failures = 0
        self._disabled = False

    def _client(self) -> Any:
        if self._api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            self._api = client.CoreV1Api()
        return self._api

    def report(self, progress: TrainingProgress, *, force: bool = False) -> bool:
        """Send unless throttled; returns whether a patch was accepted. Never raises."""
        if self._disabled:
            return False
        now = time.monotonic()
        if not force and now - self._last_sent < self.min_interval:
            return False
        self._last_sent = now
        try:
            self._client().patch_namespaced_config_map(
                name=self.target.config_map,
                namespace=self.target.namespace,
                body=progress.configmap_patch(),
                _request_timeout=10,
            )
        except Exception as exc:
            self._failures += 1
            if self._failures <= 3:
                log.warning(
                    "progress: could not patch configmap %s/%s (%s: %s); training continues",
                    self.target.namespace,
                    self.target.config_map,
                    type(exc).__name__,
                    str(exc).splitlines()[0][:200] if str(exc) else "",
                )
            if self._failures >= 20:
                log.warning("progress: giving up on the progress configmap after %d failures", self._failures)
                self._disabled = True
            return False
        self._failures = 0
        return True


class ProgressPrinter:
    """One JSON object per line on stdout: the pod log a human or log pipeline reads."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def emit(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.stream.flush()

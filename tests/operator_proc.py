"""Run ``hnav operator run`` as a real subprocess against the test cluster (kill -9 included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from healthnav.devenv.processes import free_port


class OperatorProcess:
    """One operator process watching ``namespaces``; logs go to ``log_path``."""

    def __init__(
        self, kubeconfig: Path, namespaces: list[str], log_path: Path, env: dict[str, str] | None = None
    ):
        self.kubeconfig, self.namespaces, self.log_path = kubeconfig, namespaces, log_path
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = free_port()
        self.health_port = free_port()

    def start(self) -> OperatorProcess:
        args = [
            sys.executable,
            "-m",
            "healthnav.cli",
            "operator",
            "run",
            "--standalone",
            "--metrics-port",
            str(self.metrics_port),
            "--metrics-address",
            "127.0.0.1",
            "--liveness",
            f"http://127.0.0.1:{self.health_port}/healthz",
            "--log-format",
            "json",
        ]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        # An operator on the host cannot resolve a Serve Service's cluster DNS name, and kwok's
        # pod addresses must never be dialled: no adapter verification calls from here.
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HEALTHNAV_VERIFY_ADAPTERS": "false"}
        env |= self.extra_env
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd="/", start_new_session=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"operator exited {self.proc.returncode}: {self.log_path.read_text()[-3000:]}"
                )
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"operator not healthy in 60 s: {self.log_path.read_text()[-3000:]}")

    def metrics(self) -> str:
        return (
            urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

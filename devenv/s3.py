"""A local S3-protocol server (moto's standalone server) on 127.0.0.1, or on the real node's
bridge address (``host=healthnav.devenv.network.NODE_IP``) so that pods reach it too.

Code under test talks to it exactly as it talks to AWS S3: boto3 from the standard chain,
the endpoint taken from ``AWS_ENDPOINT_URL_S3``. Nothing in healthnav knows it is local.
Objects live in the server's memory until ``down``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthnav.devenv import processes
from healthnav.devenv.binaries import cache_dir

ACCESS_KEY = "healthnav-local"
SECRET_KEY = "healthnav-local-secret"  # a local test server's credential, not a secret
REGION = "us-east-1"


@dataclass
class LocalS3:
    name: str = "default"
    state_dir: Path | None = None
    tie_to_parent: bool = False
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.state_dir = self.state_dir or cache_dir() / "s3" / self.name

    @property
    def _state_file(self) -> Path:
        assert self.state_dir
        return self.state_dir / "state.json"

    def _state(self) -> dict[str, Any]:
        return json.loads(self._state_file.read_text()) if self._state_file.exists() else {}

    @property
    def endpoint(self) -> str:
        state = self._state()
        return f"http://{state.get('host', '127.0.0.1')}:{state['port']}"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and so all of healthnav) at this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def running(self) -> bool:
        state = self._state()
        host = state.get("host", "127.0.0.1")
        return bool(state) and processes.alive(state["pid"]) and processes.port_open(state["port"], host)

    def up(self, timeout: float = 30.0) -> LocalS3:
        if self.running() and self._state().get("host", "127.0.0.1") == self.host:
            return self
        self.down()
        assert self.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        port = processes.free_port(self.host)
        moto = Path(sys.executable).with_name("moto_server")
        args = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
        log = self.state_dir / "server.log"
        pid = processes.start(
            [*args, "-H", self.host, "-p", str(port)], log, tie_to_parent=self.tie_to_parent
        )
        self._state_file.write_text(json.dumps({"pid": pid, "port": port, "host": self.host}))
        deadline = time.monotonic() + timeout
        while not processes.port_open(port, self.host):
            if time.monotonic() > deadline or not processes.alive(pid):
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                self.down()
                raise RuntimeError(f"S3 server did not start within {timeout:.0f} s; log {log}:\n{tail}")
            time.sleep(0.1)
        return self

    def down(self) -> None:
        state = self._state()
        if state.get("pid"):
            processes.stop([state["pid"]])
        assert self.state_dir
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def create_bucket(self, name: str) -> str:
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)
        return name

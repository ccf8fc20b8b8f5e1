"""Adapter affinity through real Ray Serve: two replicas, each holding one adapter at most.

A request lands on whichever replica the proxy picks; a replica that does not hold the adapter
forwards it through Ray Serve model multiplexing to one that does. The engine is the zero-cost
EchoEngine (a test and benchmark engine) told to sign its output with its process id, so the
test sees which replica generated: without affinity, requests for one adapter would be spread
over both replicas and each would load (and evict) it in turn.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from healthnav.serving.client import MULTIPLEXED_MODEL_HEADER
from healthnav.serving.config import ServeAppConfig
from healthnav.serving.engines import ECHO_FACTORY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def url(tiny_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from healthnav.serving.app import compose_app
    from healthnav.serving.local import local_serve

    root = tmp_path_factory.mktemp("affinity")
    adapters = []
    for name in ("a1", "a2"):
        shutil.copytree(tiny_adapter, root / name)
        adapters.append({"name": name, "uri": f"file://{root / name}"})
    cfg = ServeAppConfig.model_validate(
        {
            "modelName": "base",
            "baseModel": "file:///unused",
            "engine": "transformers",
            "engineArgs": {"maxLoras": 1},
            "adapters": adapters,
            "adapterCacheDir": str(root / "cache"),
            "numGpusPerReplica": 0,
            "numCpusPerReplica": 0.25,
            "apiKeysEnv": None,
            "autoscaling": {"minReplicas": 2, "maxReplicas": 2},
        }
    )
    app = compose_app(cfg, engine_factory=ECHO_FACTORY, engine_options={"identify": True})
    with local_serve(app, name="affinity") as url:
        yield url


def generated_by(url: str, model: str, headers: dict[str, str] | None = None) -> tuple[str, str]:
    """(pid, adapter) of the replica process that generated one completion for ``model``."""
    body = {"model": model, "prompt": "fever", "max_tokens": 2}
    resp = httpx.post(f"{url}/v1/completions", json=body, headers=headers or {}, timeout=60)
    assert resp.status_code == 200, resp.text
    pid, adapter = resp.json()["choices"][0]["text"].split()[0].split(":")
    return pid, adapter


def test_each_adapter_is_generated_by_the_one_replica_that_holds_it(url: str) -> None:
    import time

    for name in ("a1", "a2"):  # first use loads each; replicas report what they hold asynchronously
        generated_by(url, name)
        time.sleep(1)
    seen: dict[str, set[str]] = {"a1": set(), "a2": set()}
    for _ in range(12):
        for name in ("a1", "a2"):
            pid, adapter = generated_by(url, name)
            assert adapter == name
            seen[name].add(pid)
    assert len(seen["a1"]) == 1 and len(seen["a2"]) == 1, seen
    assert seen["a1"] != seen["a2"], "with one adapter slot per replica, each replica holds one"

    # the base model needs no adapter: any replica serves it, both get traffic
    base = {generated_by(url, "base")[0] for _ in range(24)}
    assert base == seen["a1"] | seen["a2"]


def test_the_multiplexed_model_header_reaches_the_holding_replica_too(url: str) -> None:
    holder = generated_by(url, "a1")[0]
    for _ in range(8):
        assert generated_by(url, "a1", {MULTIPLEXED_MODEL_HEADER: "a1"})[0] == holder

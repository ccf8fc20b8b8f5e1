"""The serving app on this machine's Ray: what ``hnav serve``, the demo, the benchmark and the tests run.

One place for the order that matters: Serve's settings (:data:`SERVE_ENV`) go into the
environment before Ray starts, because its proxy and replicas read them when their processes
start; and Serve and Ray are shut down whatever happens, so no test or demo leaves workers behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from healthnav.serving.config import SERVE_ENV


@contextmanager
def local_serve(
    app: Any,
    *,
    name: str = "healthnav",
    host: str = "127.0.0.1",
    port: int | None = None,
    num_cpus: int | None = 2,
    serve_env: Mapping[str, str] = SERVE_ENV,
    env_vars: Mapping[str, str] | None = None,
    log_to_driver: bool = False,
) -> Iterator[str]:
    """Start Ray and Serve, run ``app`` at ``/``, yield its base URL; shut both down on exit.

    ``port`` None picks a free one. ``serve_env`` values already set in the environment win (an
    operator's override); ``env_vars`` reach every Ray worker (e.g. S3 credentials for a demo).
    """
    import ray
    from ray import serve

    from healthnav.devenv.processes import free_port

    for key, value in serve_env.items():
        os.environ.setdefault(key, value)
    port = port or free_port()
    runtime_env = {"env_vars": dict(env_vars)} if env_vars else None
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver, runtime_env=runtime_env)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=name, route_prefix="/", blocking=False)
        yield f"http://{host}:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()

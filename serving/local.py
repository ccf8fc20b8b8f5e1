"""The serving app on this machine's Ray: what ``hnav serve``, the demo, the benchmark and the tests run.

One place for the order that matters: Serve's settings (:data:`SERVE_ENV`) go into the
environment before Ray starts, because its proxy and replicas read them when their processes
start; and Serve and Ray are shut down whatever happens, so no test or demo leaves workers behind.

``ray.shutdown()`` stops the GCS, the raylet and the workers, but Ray's dashboard and
runtime-env agents only exit once they notice their raylet is gone, seconds later, after the
command that started them has exited; :func:`stop_leftovers` ends every Ray process this
context started that is still running, and every process carrying the mark Ray's node services
started with (vLLM's engine core and workers, orphaned when Ray kills their worker), so nothing
outlives it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
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

    ``app`` may also be a function that builds the application once Ray runs (builders such as
    Ray Serve LLM's ``build_openai_app`` start a Ray of their own when none is running).
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
    before = {p.pid for p in _children()}
    # Ray's node services start now and every worker and engine process inherits their
    # environment; the caller's own later subprocesses do not (the mark is gone after ray.init).
    mark = uuid.uuid4().hex
    os.environ[MARK_ENV] = mark
    try:
        ray.init(
            num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver, runtime_env=runtime_env
        )
    finally:
        del os.environ[MARK_ENV]
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app() if callable(app) else app, name=name, route_prefix="/", blocking=False)
        yield f"http://{host}:{port}"
    finally:
        started = [p for p in _children() if p.pid not in before and _is_ray(p)]
        serve.shutdown()
        ray.shutdown()
        stop_leftovers(started + _marked(mark))


LEFTOVER_GRACE_S = 10.0
"""How long a leftover Ray process gets to exit on SIGTERM before it is killed."""


def _children() -> list[Any]:
    import psutil

    return psutil.Process().children(recursive=True)


MARK_ENV = "HEALTHNAV_LOCAL_SERVE"
"""Set in the environment Ray's processes start with, to find them once reparented to init."""


def _marked(mark: str) -> list[Any]:
    """Every process that carries this context's mark: a SIGTERM to the process group kills
    the raylet first, and vLLM's engine core then lives on under init, no one's descendant."""
    import psutil

    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.pid != os.getpid() and process.environ().get(MARK_ENV) == mark:
                found.append(process)
    return found


def _is_ray(process: Any) -> bool:
    """A process of Ray's (its node services, agents and workers), not one the caller started."""
    import psutil

    try:
        name = process.name()
        return (
            name.startswith("ray::")
            or name in ("raylet", "gcs_server")
            or any("/ray/" in part for part in process.cmdline())
        )
    except psutil.Error:
        return False


def stop_leftovers(processes: Iterable[Any], grace_s: float = LEFTOVER_GRACE_S) -> None:
    """Terminate the processes still running (SIGTERM, then SIGKILL after ``grace_s``) and reap them."""
    import psutil

    alive = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running():
                process.terminate()
                alive.append(process)
    _, stubborn = psutil.wait_procs(alive, timeout=grace_s)
    for process in stubborn:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(stubborn, timeout=grace_s)

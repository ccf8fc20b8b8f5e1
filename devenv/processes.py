"""Starting and stopping the local services as child processes, without leaking any.

Each service runs in its own process group and logs to a file in the cluster's state
directory. ``tie_to_parent`` asks the kernel to kill a service when the process that started
it dies (pytest, the demo), so a crashed or interrupted run leaves nothing behind; the
long-lived ``hnav dev cluster up`` does not tie them and ``down`` stops them by pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start(
    args: Sequence[str], log_file: Path, *, tie_to_parent: bool, env: dict[str, str] | None = None
) -> int:
    """Start a service in the background; returns its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=_die_with_parent if tie_to_parent else None,
            start_new_session=not tie_to_parent,
            close_fds=True,
        )
    return proc.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def stop(pids: Sequence[int], timeout: float = 10.0) -> None:
    """SIGTERM each process group, then SIGKILL what is still alive after ``timeout``."""
    for pid in pids:
        for sender in (os.killpg, os.kill):
            try:
                sender(pid, signal.SIGTERM)
                break
            except (ProcessLookupError, PermissionError):
                continue
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            for sender in (os.killpg, os.kill):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    sender(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0

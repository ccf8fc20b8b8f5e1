"""Warm start and teardown of the local control plane and S3 server (binaries already cached).

Goal (issue 2): warm start under 30 s; ``down`` leaves no process or port behind.
Writes bench/results/devenv_startup.json.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from healthnav.devenv import processes
from healthnav.devenv.binaries import ensure_binaries
from healthnav.devenv.cluster import LocalCluster
from healthnav.devenv.s3 import LocalS3

RUNS = 3


def main() -> None:
    ensure_binaries()
    ups, downs, s3_ups, leaks = [], [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(RUNS):
            cluster = LocalCluster(f"bench-{i}", Path(tmp) / f"c{i}", tie_to_parent=True)
            t0 = time.perf_counter()
            cluster.up()
            ups.append(time.perf_counter() - t0)
            state = cluster._load_state()
            t0 = time.perf_counter()
            cluster.down()
            downs.append(time.perf_counter() - t0)
            leaks += sum(processes.alive(p) for p in state.pids.values())
            leaks += sum(processes.port_open(p) for p in state.ports.values())
            s3 = LocalS3(f"bench-{i}", Path(tmp) / f"s{i}", tie_to_parent=True)
            t0 = time.perf_counter()
            s3.up()
            s3_ups.append(time.perf_counter() - t0)
            s3.down()
    result = {
        "cluster_warm_start_s": {"median": statistics.median(ups), "max": max(ups), "runs": ups},
        "cluster_down_s": {"median": statistics.median(downs), "runs": downs},
        "s3_start_s": {"median": statistics.median(s3_ups), "runs": s3_ups},
        "leaked_processes_or_ports": leaks,
        "goal": "warm start < 30 s, nothing leaked",
    }
    out = Path(__file__).parent / "results" / "devenv_startup.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

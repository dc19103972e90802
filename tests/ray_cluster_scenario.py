"""A two-node Ray cluster on this machine runs one audit; one node is killed in the middle of a
task. Run inside a private network namespace (tests/test_executors.py does):

    python tests/ray_cluster_scenario.py OUT TRACE [audit run flags...]

Prints one JSON line: the audit's exit status, the task that was running on the killed node, and
where every task attempt started and ended (from the $SYNTHAUDIT_TASK_TRACE lines).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

from ray.cluster_utils import Cluster

TASK_CPUS = 2  # --threads of the audit (the serial fixture's), so each node runs one task


def attempts(trace: Path) -> list[dict]:
    if not trace.exists():
        return []
    return [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]


def main() -> None:
    out, trace, flags = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    os.environ["SYNTHAUDIT_TASK_TRACE"] = str(trace)  # before the nodes: their workers inherit it
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the driver only
    nodes = [cluster.add_node(num_cpus=TASK_CPUS) for _ in range(2)]
    cluster.wait_for_nodes()
    victim = nodes[1]
    command = ["audit", "run", *flags, "--threads", str(TASK_CPUS), "--executor", "ray"]
    command += ["--ray-address", cluster.address, "--out", str(out)]
    driver = subprocess.Popen(command)
    killed = None
    deadline = time.monotonic() + 300
    # kill the victim while it runs a reference pipeline (seconds long): a start with no end
    while killed is None and driver.poll() is None and time.monotonic() < deadline:
        events = attempts(trace)
        ended = {(e["task"], e["pid"]) for e in events if e["event"] == "end"}
        running = [
            e
            for e in events
            if e["event"] == "start"
            and e["node"] == victim.node_id
            and e["task"].startswith("mia_refs:")
            and (e["task"], e["pid"]) not in ended
        ]
        if running:
            time.sleep(1.0)  # well inside the task
            cluster.remove_node(victim, allow_graceful=False)
            killed = running[0]["task"]
        time.sleep(0.2)
    code = driver.wait(timeout=900)
    cluster.shutdown()
    print(
        json.dumps(
            {
                "returncode": code,
                "killed_task": killed,
                "victim": victim.node_id,
                "nodes": [n.node_id for n in nodes],
                "attempts": attempts(trace),
            }
        )
    )


if __name__ == "__main__":
    main()

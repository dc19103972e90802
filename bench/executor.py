"""Side-by-side: the same task graph with N reference pipelines on one Ray worker and on W.

Each worker is one CPU and each task one torch thread (`--threads 1`), so the graph's
parallelism is all the speed-up there is: the reference pipelines, generators and rows run side by
side. The serial executor runs the same graph too, as the baseline that Ray's overhead is
measured against. All runs are inside a private network namespace (audit/engine/netns.py: nothing
leaves the machine); their results.json must agree byte for byte. The last line is the ratio
(`speedup: 2 Ray workers over 1 ...`). Ratios only; absolute times depend on the machine.

    python bench/executor.py                      # smoke preset, 8 references, 1 vs 2 workers
    python bench/executor.py --refs 16 --workers 8 --preset quick
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from audit.engine import netns


def timed_run(out: Path, flags: list[str]) -> float:
    command = [sys.executable, "-m", "audit.cli", "run", *flags, "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(netns.isolated(command), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=int, default=8, help="reference pipelines (--mia-refs)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--generator", nargs="+", default=["bn_match"])
    args = parser.parse_args()
    why = netns.why_not()
    if why:
        sys.exit(f"bench/executor.py needs a private network namespace for Ray: {why}")
    flags = ["--preset", args.preset, "--device", "cpu", "--mia-refs", str(args.refs)]
    flags += ["--threads", "1", "--generator", *args.generator]
    runs = {
        "serial": ["--executor", "serial"],
        "ray, 1 worker": ["--executor", "ray", "--ray-cpus", "1"],
        f"ray, {args.workers} workers": ["--executor", "ray", "--ray-cpus", str(args.workers)],
    }
    seconds, results = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, extra) in enumerate(runs.items()):
            out = Path(tmp) / f"run{i}"
            seconds[name] = timed_run(out, [*flags, *extra])
            results[name] = (out / "results.json").read_bytes()
            print(f"{name:<16} {seconds[name]:7.1f} s", flush=True)
    same = len(set(results.values())) == 1
    print(f"results.json identical across the three runs: {same}")
    one, many = seconds["ray, 1 worker"], seconds[f"ray, {args.workers} workers"]
    print(f"ray overhead: 1 worker over serial {one / seconds['serial']:.2f}x the time")
    print(
        f"speedup: {args.workers} Ray workers over 1, {one / many:.2f}x "
        f"({args.refs} reference pipelines, preset {args.preset})"
    )
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()

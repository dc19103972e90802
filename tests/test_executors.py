"""Executors: the serial run and the same run on a two-node Ray cluster, one node killed in the
middle of a task, give the same bytes (tests/ray_cluster_scenario.py, in a private network
namespace: nothing leaves the machine). Where Ray or the namespace is unavailable, the second
run is serial in another process, and the Ray assertions skip with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from audit.engine import netns
from tests.conftest import WITH_REFS

SCENARIO = Path(__file__).with_name("ray_cluster_scenario.py")


def ray_unavailable() -> str | None:
    try:
        import ray  # noqa: F401
    except ImportError:
        return 'Ray is not installed (pip install -e ".[test]" installs it)'
    return netns.why_not()


@pytest.fixture(scope="module")
def second_run(tmp_path_factory) -> tuple[Path, dict | None]:
    """(the run directory, the Ray scenario's summary or None when it ran serially)."""
    root = tmp_path_factory.mktemp("executors")
    out, trace = root / "ray", root / "trace.jsonl"
    if ray_unavailable():
        command = [sys.executable, "-m", "audit.cli", *WITH_REFS, "--threads", "2"]
        subprocess.run([*command, "--out", str(out)], check=True, timeout=900)
        return out, None
    flags = WITH_REFS[1:]  # without the "run" subcommand
    proc = subprocess.run(
        netns.isolated([sys.executable, str(SCENARIO), str(out), str(trace), *flags]),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(proc.stdout.strip().splitlines()[-1])


def test_same_seed_same_bytes_in_another_process_and_executor(smoke_run, second_run):
    """Every output the run keeps (sets, models, scores, results) is byte for byte the serial
    run's; config.json (timings, executor) and the stage records (seconds) may differ."""
    out, _ = second_run
    kept = sorted(
        p.relative_to(smoke_run)
        for p in smoke_run.rglob("*")
        if p.is_file()
        and (p.suffix in (".npz", ".pt", ".csv", ".html") or p.name == "results.json")
    )
    assert len(kept) > 40
    different = [str(p) for p in kept if (smoke_run / p).read_bytes() != (out / p).read_bytes()]
    # the report shows the run directory and the executor's timings: all else must agree
    assert different in ([], ["report.html"]), different
    assert (smoke_run / "results.json").read_bytes() == (out / "results.json").read_bytes()
    assert (smoke_run / "results.csv").read_bytes() == (out / "results.csv").read_bytes()


def test_ray_tasks_ran_on_both_nodes_and_survived_a_node_kill(second_run):
    out, summary = second_run
    if summary is None:
        pytest.skip(ray_unavailable() or "ran serially")
    assert summary["returncode"] == 0
    attempts = summary["attempts"]
    ended = [a for a in attempts if a["event"] == "end"]
    assert {a["node"] for a in ended} == set(summary["nodes"])  # both nodes finished tasks
    killed = summary["killed_task"]
    assert killed is not None, "no reference pipeline ran on the victim node"
    # the killed attempt never ended; the retry ran on the surviving node and did
    killed_starts = [a for a in attempts if a["task"] == killed and a["event"] == "start"]
    assert killed_starts[0]["node"] == summary["victim"]
    finished = [a for a in ended if a["task"] == killed]
    assert len(finished) == 1 and finished[0]["node"] != summary["victim"]
    manifest = json.loads((out / "config.json").read_text())
    assert manifest["status"] == "complete" and manifest["executor"] == "ray"
    assert manifest["task_nodes"][killed] != summary["victim"]


def test_ray_flags_without_the_ray_executor_are_refused(capsys):
    from audit.cli import main

    assert main([*WITH_REFS, "--ray-cpus", "2", "--out", "/nonexistent/never"]) == 2
    assert "--ray-address and --ray-cpus need --executor ray" in capsys.readouterr().err


def test_ray_executor_without_ray_says_how_to_install(monkeypatch):
    from audit.core.errors import AuditError
    from audit.engine.ray_executor import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(AuditError, match=r'pip install -e "\.\[ray\]"'):
        RayExecutor()


def test_a_ray_address_nobody_answers_is_one_line_and_exit_2(tmp_path, capsys):
    """Without the check ray.init retries for minutes; loopback only, nothing leaves."""
    from audit.cli import main

    pytest.importorskip("ray")
    out = tmp_path / "never"
    flags = ["--executor", "ray", "--ray-address", "127.0.0.1:1", "--out", str(out)]
    assert main([*WITH_REFS, *flags]) == 2
    assert "--ray-address 127.0.0.1:1: no Ray cluster answers there" in capsys.readouterr().err
    assert not out.exists()

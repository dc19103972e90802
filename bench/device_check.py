"""One prepared device check: the suite's GPU paths timed in one command, into one JSON file.

    python bench/device_check.py --out DIR            # one H100/H200: about 7 minutes
    python bench/device_check.py --tiny --out DIR     # any CPU, seconds (a test runs it in CI)

GPU time is scarce, so the check is one command, sized to a budget (--budget-s, 450 s), and each
section is written to DIR/device_check.json (atomically) the moment it finishes: a run stopped by
a time limit still leaves what it measured. Sections:

similarity  exact NN-SSIM and NN-HaarPSI, 10,000 queries x 50,000 references, 3x32x32 (CIFAR-10
            when the JPEG archive is found, else random): seconds each, torch.compile's start-up
            timed apart; the argmax against a piq loop on a sample of queries. Goal: under 20 s.
bn_groups   BN groups in one pass against the same groups one pass each (bench/bn_groups.py).
            Goal 20x, at least 5x.
training    the suite's training loop against a plain DataLoader loop (bench/training.py), and
            ResNet20 training images/s. Goal 5x, at least 3x.
paper_run   a reduced paper run (the paper preset with fewer synthetic images and epochs, K 500 /
            2,000), sized from the rates measured above to fit the time left; its seconds and
            peak GPU memory per stage, its accuracies, and the full paper preset's time
            extrapolated stage by stage: audit/engine/costs.py's work units, each stage's rate
            calibrated on this run.

Every section records the peak GPU memory it allocated. What is skipped is printed and recorded
with the reason. Exit status 1 when a section failed; the JSON says which and why.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bn_groups
import numpy as np
import similarity as similarity_bench
import torch
import training as training_bench

from audit.core.store import to_json, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
ARCHIVES = (  # where the CIFAR-10 JPEG archive is looked for, first found wins
    REPO / "bench" / "data" / "cifar10-jpeg.tar.gz",  # ignored by git: carried to a device
    REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz",
)
RESULT = "device_check.json"
# the reduced paper run's child process: settings as JSON in argv[1]
RUN_CHILD = (
    "import json, sys, audit; "
    "audit.run_audit(audit.configure(**json.loads(sys.argv[1])), overwrite=True)"
)


@dataclass(frozen=True)
class Sizes:
    sim_queries: int
    sim_references: int
    piq_queries: int
    bn_groups: int
    bn_group_size: int
    bn_steps: int
    bn_image_size: int
    train_images: int
    train_epochs: int
    train_batch: int
    train_workers: int
    # the reduced paper run: the preset it starts from and the settings it always overrides
    run_preset: str
    run_settings: dict[str, Any]
    run_bn_steps: int  # max K of the reduced run (what its synthesis time is sized by)


FULL = Sizes(
    sim_queries=10_000,
    sim_references=50_000,
    piq_queries=20,
    bn_groups=16,
    bn_group_size=250,
    bn_steps=20,
    bn_image_size=32,
    train_images=20_000,
    train_epochs=2,
    train_batch=128,
    train_workers=min(8, os.cpu_count() or 1),
    run_preset="paper",
    run_settings={
        "k": (500, 2000),
        "generator": ("bn_match", "dp_vae"),
        "mia_candidates": 2000,
        "inversion": {"steps": 200, "per_class": 2},
        "features": {"decoder_steps": 300, "victims": 100, "hcr_images": 2},
    },
    run_bn_steps=2000,
)
TINY = Sizes(
    sim_queries=24,
    sim_references=96,
    piq_queries=4,
    bn_groups=2,
    bn_group_size=8,
    bn_steps=2,
    bn_image_size=16,
    train_images=64,
    train_epochs=1,
    train_batch=32,
    train_workers=0,
    run_preset="smoke",
    run_settings={"generator": ("bn_match",), "max_members": 80, "max_nonmembers": 80},
    run_bn_steps=4,
)


class Recorder:
    """The JSON document, rewritten atomically after every section."""

    def __init__(self, out: Path, document: dict[str, Any]) -> None:
        self.path = out / RESULT
        self.document = document
        self.document["sections"] = {}
        self.save()

    def save(self) -> None:
        write_text_atomic(self.path, to_json(self.document))

    def section(self, name: str, record: dict[str, Any]) -> None:
        self.document["sections"][name] = record
        self.save()


@contextlib.contextmanager
def peak_memory(device: str, record: dict[str, Any]) -> Iterator[None]:
    """record["peak_gpu_mb"]: the most GPU memory allocated inside the block (None on a CPU)."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    try:
        yield
    finally:
        if cuda:
            torch.cuda.synchronize()
            record["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        else:
            record["peak_gpu_mb"] = None


def timed(sync: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """fn(*args, **kwargs) and its seconds, the queue of device `sync` drained."""
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    if sync.startswith("cuda"):
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


# --------------------------------------------------------------------------- data


def find_archive(given: str | None) -> Path | None:
    if given:
        return Path(given)
    return next((p for p in ARCHIVES if p.exists()), None)


def cifar_folder(source: Path, scratch: Path) -> Path:
    """The JPEG folder (train/<class>/*.jpg, test/...): source itself, or the archive unpacked."""
    if source.is_dir():
        return source
    target = scratch / "cifar10-jpeg"
    with tarfile.open(source) as tar:
        tar.extractall(target, filter="data")
    return target


# --------------------------------------------------------------------------- sections


def check_similarity(
    sizes: Sizes, device: str, images: np.ndarray | None, source: str
) -> dict[str, Any]:
    from audit.core.similarity import block_shape, nearest_neighbours

    n, m = sizes.sim_queries, sizes.sim_references
    record: dict[str, Any] = {"queries": n, "references": m, "images": source}
    if images is not None and len(images) >= n + m:
        # the folder lists images class by class: a seeded shuffle mixes the classes
        order = np.random.default_rng(0).permutation(len(images))
        query, reference = images[order[:n]], images[order[n : n + m]]
    else:
        rng = np.random.default_rng(0)
        query = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        reference = rng.integers(0, 256, (m, 32, 32, 3), dtype=np.uint8)
        if images is not None:
            record["images"] = f"random ({source} has {len(images)} < {n + m} images)"
    compiled = n * m >= 500_000  # what nearest_neighbours picks by itself
    record["compiled"] = compiled
    for metric in ("ssim", "haarpsi"):
        part: dict[str, Any] = {}
        with peak_memory(device, part):
            # torch.compile's start-up, on one block of the same shape as the timed run's
            nq, nr = block_shape(n, m, metric, query.shape[1:], device=device, compiled=compiled)
            part["block"] = [nq, nr]
            options = {"device": device, "progress": False}
            _, warm_up = timed(
                device, nearest_neighbours, query[:nq], reference[:nr], metric, **options
            )
            (values, indices), seconds = timed(
                device, nearest_neighbours, query, reference, metric, **options
            )
            part["warm_up_s"] = round(warm_up, 3)
        part["seconds"] = round(seconds, 3)
        part["pairs_per_s"] = round(n * m / seconds)
        # the piq loop on a sample of queries against every reference: the exactness check
        sample = min(sizes.piq_queries, n)
        q = torch.from_numpy(query[:sample]).permute(0, 3, 1, 2).float().div(255).to(device)
        r = torch.from_numpy(reference).permute(0, 3, 1, 2).float().div(255).to(device)
        brute, piq_s = timed(device, similarity_bench.piq_loop, q, r, metric)
        best = brute.max(dim=1)
        part["piq_queries"] = sample
        part["piq_loop_s_extrapolated"] = round(piq_s * n / sample, 1)
        part["same_argmax"] = float((best.indices.cpu().numpy() == indices[:sample, 0]).mean())
        part["max_abs_diff"] = float(np.abs(best.values.cpu().numpy() - values[:sample, 0]).max())
        record[metric] = part
    return record


def measured(
    device: str, settings: dict[str, Any], measure: Callable[..., dict[str, float]], *args: Any
) -> dict[str, Any]:
    """settings, plus what measure(*args) returns, plus the peak GPU memory it took."""
    record = dict(settings)
    with peak_memory(device, record):
        record.update(measure(*args))
    return record


def check_bn_groups(sizes: Sizes, device: str) -> dict[str, Any]:
    shape = (sizes.bn_groups, sizes.bn_group_size, sizes.bn_steps, sizes.bn_image_size)
    names = ("groups", "group_size", "steps", "image_size")
    return measured(device, dict(zip(names, shape, strict=True)), bn_groups.measure, *shape, device)


def check_training(sizes: Sizes, device: str) -> dict[str, Any]:
    shape = (sizes.train_images, sizes.train_epochs, sizes.train_batch, sizes.train_workers)
    names = ("images", "epochs", "batch_size", "dataloader_workers")
    settings = dict(zip(names, shape, strict=True))
    return measured(device, settings, training_bench.measure, *shape, device)


def reduced_settings(
    sizes: Sizes, seconds_left: float, rates: dict[str, float], members: int
) -> dict[str, Any]:
    """The reduced paper run's settings, sized so synthesis and training each take about a
    quarter of the time left at the rates measured earlier in this check (the rest: attacks,
    similarity, the DP-VAE, the report). Tiny: the smoke preset as it is."""
    settings = dict(sizes.run_settings)
    if sizes.run_preset != "paper":
        return settings
    group = 250
    bn_rate = rates.get("bn_image_steps_per_s")
    if bn_rate:
        fitting = seconds_left / 4 * bn_rate / sizes.run_bn_steps
        settings["n_synthetic"] = int(min(max(fitting // group, 1), 10) * group)
    else:
        settings["n_synthetic"] = 2500
    train_rate = rates.get("train_images_per_s")
    # image-epochs per epoch of every recipe: target, real-members baseline, the releases, the
    # population model on the test split (about members / 2.5)
    releases = len(settings["k"]) + 1
    per_epoch = 2.4 * members + releases * settings["n_synthetic"]
    epochs = int(seconds_left / 4 * train_rate / per_epoch) if train_rate else 10
    epochs = min(max(epochs, 2), 30)
    settings["target"] = {"epochs": epochs}
    settings["utility"] = {"epochs": epochs}
    settings["vae"] = {"epochs": max(1, epochs // 3)}
    settings["inversion"] = {**settings["inversion"], "eval_epochs": epochs}
    return settings


def check_paper_run(
    sizes: Sizes,
    device: str,
    data_settings: dict[str, Any],
    seconds_left: float,
    rates: dict[str, float],
    scratch: Path,
    loaded: Any,
) -> dict[str, Any]:
    import pandas as pd

    import audit
    from audit.core.store import row_name
    from audit.engine.build import graph_of
    from audit.engine.run import dataset_for, remember_dataset

    full = audit.configure(preset="paper", device=device, **data_settings)
    if loaded is not None:  # the JPEGs the similarity section decoded, not decoded again
        remember_dataset(full, loaded)
    data = dataset_for(full)
    # members as audit/core/data.py's split draws them: half the train part, or a fraction of all
    pool = data.n_train // 2 if data.n_train else len(data.images) * full.member_fraction
    members = int(min(pool, full.max_members or pool))
    settings = reduced_settings(sizes, seconds_left, rates, members)
    out = scratch / "paper_run"
    config = audit.configure(
        preset=sizes.run_preset, device=device, out=str(out), **data_settings, **settings
    )
    record: dict[str, Any] = {
        "preset": sizes.run_preset,
        "dataset": config.dataset,
        "settings": settings,
        "n_synthetic": config.n_synthetic,
        "k": list(config.k),
    }
    # the run in a child process with a deadline: an overrun still leaves this check its JSON,
    # and config.json keeps the seconds of every stage the run finished
    given = {"preset": sizes.run_preset, "device": device, "out": str(out)}
    child = [sys.executable, "-c", RUN_CHILD, json.dumps({**given, **data_settings, **settings})]
    deadline = seconds_left
    began = time.perf_counter()
    process = subprocess.Popen(child, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        record["timed_out_after_s"] = round(deadline, 1)
    else:
        if process.returncode != 0:
            last = (stderr.strip().splitlines() or ["(no message)"])[-1]
            raise RuntimeError(f"the reduced run failed (exit {process.returncode}): {last}")
    record["seconds"] = round(time.perf_counter() - began, 1)
    recorded = out / "config.json"  # absent when the run was stopped before it began
    manifest = json.loads(recorded.read_text()) if recorded.exists() else {"timings_s": {}}
    timings = manifest["timings_s"]
    record["stage_seconds"] = {k: v for k, v in timings.items() if "." not in k}
    peaks: dict[str, float] = {}  # the run records each task's peak; a stage's is its tasks' max
    for task_id, mib in manifest.get("peak_gpu_mb", {}).items():
        stage = task_id.split(":")[0]
        peaks[stage] = max(peaks.get(stage, 0.0), mib)
    record["stage_peak_gpu_mb"] = peaks
    record["peak_gpu_mb"] = max(peaks.values()) if peaks else None
    if "timed_out_after_s" not in record:
        results = audit.load_results(out)
        record["accuracy"] = {  # test accuracy of the target and of ResNet20 retrained on each row
            row_name(
                row["generator"],
                None if pd.isna(row["k"]) else int(row["k"]),
                None if pd.isna(row["epsilon"]) else float(row["epsilon"]),
            ): round(float(row["utility_acc"]), 4)
            for _, row in results.iterrows()
            if not pd.isna(row["utility_acc"])
        }
    # extrapolation: per stage, measured seconds / the cost model's estimate for this run, times
    # the cost model's estimate for the full preset (stages the model prices at 0 count as is)
    reduced_graph, full_graph = graph_of(config, dataset_for(config)), graph_of(full, data)
    estimate: dict[str, float] = {}
    for stage, measured in record["stage_seconds"].items():
        # a run cut short lists the stage it was in at 0 s: only finished stages count
        cut_short = "timed_out_after_s" in record and not measured
        if stage not in full_graph.tasks or cut_short:
            continue
        planned = sum(t.cost for t in reduced_graph.tasks.get(stage, []))
        planned_full = sum(t.cost for t in full_graph.tasks[stage])
        estimate[stage] = round(measured * planned_full / planned if planned else measured, 1)
    unmeasured = [s for s in full_graph.tasks if s not in estimate]
    record["paper_preset_estimate"] = {
        "stage_seconds": estimate,
        "total_hours": round(sum(estimate.values()) / 3600, 2),
        "stages_not_measured": unmeasured,
        "method": "each stage's measured seconds scaled by audit/engine/costs.py's work units, "
        "full paper preset over this run",
    }
    return record


# --------------------------------------------------------------------------- main


def goal_lines(sections: dict[str, Any], on_gpu: bool) -> list[tuple[str, str, str, str]]:
    """(measure, value, goal, verdict) for the printed table; goals are judged on a GPU only."""
    rows = []

    def judge(ok: bool, floor: bool | None = None) -> str:
        if not on_gpu:
            return "(CPU)"
        if ok:
            return "met"
        return "below goal, above floor" if floor else "not met"

    sim = sections.get("similarity", {})
    for metric in ("ssim", "haarpsi"):
        part = sim.get(metric)
        if part:
            label = f"NN-{metric.upper()} {sim['queries']:,} x {sim['references']:,}"
            rows.append((label, f"{part['seconds']:.1f} s", "< 20 s", judge(part["seconds"] < 20)))
            rows.append(
                (
                    f"  same argmax as piq ({part['piq_queries']} queries)",
                    f"{part['same_argmax']:.0%}",
                    "100%",
                    "",
                )
            )
    bn = sections.get("bn_groups", {})
    if "speedup" in bn:
        ok = bn["speedup"] >= 20
        rows.append(
            (
                "BN groups in one pass",
                f"{bn['speedup']:.1f}x",
                "20x (>= 5x)",
                judge(ok, bn["speedup"] >= 5),
            )
        )
    tr = sections.get("training", {})
    if "speedup" in tr:
        rows.append(
            (
                "training loop vs DataLoader",
                f"{tr['speedup']:.1f}x",
                "5x (>= 3x)",
                judge(tr["speedup"] >= 5, tr["speedup"] >= 3),
            )
        )
        rows.append(("ResNet20 training", f"{tr['suite_images_per_s']:,.0f} img/s", "", ""))
    run = sections.get("paper_run", {})
    if "seconds" in run:
        label = f"reduced paper run ({run['n_synthetic']} images)"
        stopped = "stopped at the budget" if "timed_out_after_s" in run else ""
        rows.append((label, f"{run['seconds']:.0f} s", "", stopped))
        hours = run["paper_preset_estimate"]["total_hours"]
        rows.append(("full paper preset, extrapolated", f"{hours:.2f} h", "", ""))
    for name, section in sections.items():
        if section.get("peak_gpu_mb") is not None:
            rows.append((f"peak GPU memory: {name}", f"{section['peak_gpu_mb']:,.0f} MiB", "", ""))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for device_check.json")
    parser.add_argument("--tiny", action="store_true", help="CPU-sized: every path, in seconds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget-s", type=float, default=450.0, help="the whole check's time")
    parser.add_argument("--cifar", help="CIFAR-10 JPEG archive or folder (default: found)")
    parser.add_argument(
        "--only", nargs="+", choices=("similarity", "bn_groups", "training", "paper_run")
    )
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    if not args.tiny and not args.device.startswith("cuda"):
        print("no GPU: the full check takes hours on a CPU; use --tiny", file=sys.stderr)
        return 2
    if args.cifar and not Path(args.cifar).exists():
        print(f"--cifar {args.cifar}: no such file or folder", file=sys.stderr)
        return 2
    start = time.perf_counter()
    sizes = TINY if args.tiny else FULL
    out = Path(args.out)
    from audit.core.provenance import environment

    recorder = Recorder(
        out,
        {
            "device": args.device,
            "tiny": args.tiny,
            "budget_s": args.budget_s,
            "status": "running",  # "complete" once every section has been run or skipped
            "environment": environment(),
        },
    )
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    rates: dict[str, float] = {}
    wanted = set(args.only or ("similarity", "bn_groups", "training", "paper_run"))
    with tempfile.TemporaryDirectory(prefix="device_check.") as tmp:
        scratch = Path(tmp)
        archive = None if args.tiny else find_archive(args.cifar)
        images, source, loaded = None, "random (no CIFAR-10 archive found)", None
        data_settings: dict[str, Any] = {"dataset": "digits"}
        if args.tiny:
            source = "random (--tiny)"
        elif archive is not None:
            from audit.core.data import load_dataset

            folder = cifar_folder(archive, scratch)
            loaded, load_s = timed("cpu", load_dataset, "imagefolder", str(folder), image_size=None)
            images, source = loaded.images, f"CIFAR-10 ({archive.name})"
            data_settings = {"dataset": "imagefolder", "data_root": str(folder)}
            recorder.document["data_load_s"] = round(load_s, 1)

        def run_section(name: str, fn: Callable[[], dict[str, Any]]) -> None:
            if name not in wanted:
                return
            left = args.budget_s - (time.perf_counter() - start)
            if left < 20 and not args.tiny:
                skipped[name] = f"time budget: {left:.0f} s of {args.budget_s:.0f} s left"
                recorder.section(name, {"status": "skipped", "reason": skipped[name]})
                return
            print(f"[{name}] ...", flush=True)
            began = time.perf_counter()
            try:
                record = fn()
                record["status"] = "ok"
            except Exception as exc:  # one section's failure must not lose the others' figures
                failed[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                record = {
                    "status": "failed",
                    "error": failed[name],
                    "traceback": traceback.format_exc()[-4000:],
                }
                print(f"[{name}] FAILED: {failed[name]}", file=sys.stderr, flush=True)
            record["section_s"] = round(time.perf_counter() - began, 1)
            recorder.section(name, record)

        run_section("similarity", lambda: check_similarity(sizes, args.device, images, source))
        run_section("bn_groups", lambda: check_bn_groups(sizes, args.device))
        bn = recorder.document["sections"].get("bn_groups", {})
        if "one_pass_image_steps_per_s" in bn:
            rates["bn_image_steps_per_s"] = bn["one_pass_image_steps_per_s"]
        run_section("training", lambda: check_training(sizes, args.device))
        tr = recorder.document["sections"].get("training", {})
        if "suite_images_per_s" in tr:
            rates["train_images_per_s"] = tr["suite_images_per_s"]
        if args.device.startswith("cuda"):  # the reduced run's own process needs the memory
            torch.cuda.empty_cache()
        if archive is None and not args.tiny and "paper_run" in wanted:
            print("[paper_run] no CIFAR-10 archive: the reduced run uses digits at 32 px")
        run_section(
            "paper_run",
            lambda: check_paper_run(
                sizes,
                args.device,
                data_settings,
                max(args.budget_s - (time.perf_counter() - start) - 15, 30.0),
                rates,
                scratch,
                loaded,
            ),
        )
        for name in sorted({"similarity", "bn_groups", "training", "paper_run"} - wanted):
            skipped[name] = "not asked for (--only)"
    recorder.document["skipped"] = skipped
    recorder.document["failed"] = failed
    recorder.document["total_s"] = round(time.perf_counter() - start, 1)
    recorder.document["status"] = "complete"
    recorder.save()
    sections = recorder.document["sections"]
    rows = goal_lines(sections, args.device.startswith("cuda"))
    width = max([len(r[0]) for r in rows] + [10])
    print(
        f"\ndevice check on {args.device}{' (tiny)' if args.tiny else ''}: "
        f"{recorder.document['total_s']:.0f} s"
    )
    for measure, value, goal, verdict in rows:
        print(f"{measure:<{width}}  {value:>14}  {goal:<12}  {verdict}")
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    for name, reason in failed.items():
        print(f"FAILED {name}: {reason}")
    print(f"figures: {recorder.path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

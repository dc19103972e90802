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
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bn_groups
import numpy as np
import similarity as similarity_bench
import torch
import training as training_bench
from device_paper_run import check_paper_run
from device_tools import (
    Recorder,
    cifar_folder,
    find_archive,
    measured,
    peak_memory,
    timed,
)

REPO = Path(__file__).resolve().parents[1]


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


# --------------------------------------------------------------------------- data


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


def check_bn_groups(sizes: Sizes, device: str) -> dict[str, Any]:
    shape = (sizes.bn_groups, sizes.bn_group_size, sizes.bn_steps, sizes.bn_image_size)
    names = ("groups", "group_size", "steps", "image_size")
    return measured(device, dict(zip(names, shape, strict=True)), bn_groups.measure, *shape, device)


def check_training(sizes: Sizes, device: str) -> dict[str, Any]:
    shape = (sizes.train_images, sizes.train_epochs, sizes.train_batch, sizes.train_workers)
    names = ("images", "epochs", "batch_size", "dataloader_workers")
    settings = dict(zip(names, shape, strict=True))
    return measured(device, settings, training_bench.measure, *shape, device)


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

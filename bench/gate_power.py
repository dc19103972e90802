"""The gate's power table: what its similarity tests catch and what they pass.

1. Planted releases x datasets -> each test's p-value and the verdict. Each release is scored by
   the privacy stage's own code (audit/core/memorisation.py) against the run's yardstick (all
   members, the holdout, the calibration ratios), as `audit run --synthetic` would. Copies are
   of distinct random members; moved copies are shifted as crop augmentation shifts them (zero
   fill, which the search does not assume: it repeats the edge), mirrored copies flipped
   left-right; noisy copies get uniform integer noise in [-8, 8]. Real DP releases: the run's
   DP-VAE (and, with --dp2, DP^2-VAE) at epsilon 1 (and 10), trained on the members.
2. The false-FAIL rate of honest releases: over several random splits (each its own yardstick
   and calibration), every honest image is scored once (held-out images, their blurred
   versions, and jittered repeats: +-8 noise and a 1-px shift), then releases are resampled from
   those per-image results and judged by the gate's own tests: held-out images, blurred,
   collapsed (1-20 images repeated) and jittered-collapsed releases of 100, 250 and 500 images.

The verdict here is the gate's similarity part: no exact copy, and holdout_share_{ssim,haarpsi}
and copy_count_{ssim,haarpsi} each at p >= alpha / tests, at two levels: one release under the
default gate's six tests (alpha / 6), and the default run's three releases (alpha / 18). The two
membership tests need trained models and are not run here.

    python bench/gate_power.py                          # digits, then the CIFAR-10 subset
    python bench/gate_power.py --datasets digits --splits 5 --draws 400 --out gate_power.json
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from gate_power_cases import blurred, dp_releases, jittered, planted

from audit.core.config import RunConfig, build_config
from audit.core.data import ImageDataset, Split, load_dataset
from audit.core.holdout import copy_count_test, holdout_share_test
from audit.core.memorisation import METRICS, Yardstick, calibration_ratios, make_yardstick
from audit.core.memorisation import release_statistics as statistics
from audit.core.splits import split_dataset
from audit.core.stats import clopper_pearson_interval
from audit.core.store import to_json, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
ALPHA = 0.05
TESTS = tuple(f"{test}_{m}" for test in ("holdout_share", "copy_count") for m in METRICS)
LEVELS = {"one release": ALPHA / 6, "three releases": ALPHA / 18}


# the releases it judges: gate_power_cases.py


# --------------------------------------------------------------------------- judging


def verdicts(p_values: dict[str, float], exact: int) -> dict[str, Any]:
    """The verdict at each level: FAIL on an exact copy or a test below the level."""
    out = {}
    for name, level in LEVELS.items():
        failed = [t for t, p in p_values.items() if p < level]
        out[name] = {
            "verdict": "FAIL" if failed or exact else "PASS",
            "failed": (["exact_copies"] if exact else []) + failed,
        }
    return out


def audit_release(
    release: np.ndarray, y: Yardstick, calibration: dict[str, np.ndarray], seed: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return statistics(
        release,
        y,
        calibration,  # type: ignore[arg-type]
        rngs={m: np.random.default_rng([seed, i]) for i, m in enumerate(METRICS)},
        nn_k=1,
        levels=(),
        device="cpu",
    )


def judged(row: dict[str, Any]) -> dict[str, Any]:
    p_values = {test: float(row[f"{test}_p"]) for test in TESTS}
    return {
        "p": p_values,
        "exact_copies": int(row["exact_copies"]),
        "suspected": max(int(row[f"copy_count_{m}"]) for m in METRICS),
        **verdicts(p_values, int(row["exact_copies"])),
    }


# --------------------------------------------------------------------------- honest draws


class Scored:
    """Per-image results of a set of images, to resample releases from without rescoring."""

    def __init__(self, arrays: dict[str, np.ndarray], n: int) -> None:
        self.arrays = arrays
        self.exact = np.zeros(n, bool)
        self.exact[arrays["exact_copy_released"].astype(np.int64)] = True

    def judge(
        self,
        picks: np.ndarray,
        y: Yardstick,
        calibration: dict[str, np.ndarray],
        rng: np.random.Generator,
    ) -> dict[str, Any]:
        n_members, n_pool = len(y.members), len(y.members) + len(y.holdout)
        p_values = {}
        for m in METRICS:
            share = holdout_share_test(
                self.arrays[f"{m}_nearest_pool"][picks], n_members, n_pool, rng, 2_000
            )
            copies = copy_count_test(
                self.arrays[f"{m}_ratio"][picks], self.arrays[f"{m}_member"][picks], calibration[m]
            )
            p_values[f"holdout_share_{m}"], p_values[f"copy_count_{m}"] = (
                share.p_value,
                copies.p_value,
            )
        return verdicts(p_values, int(self.exact[picks].sum()))


def honest_draws(
    y: Yardstick,
    calibration: dict[str, np.ndarray],
    honest: np.ndarray,
    draws: int,
    rng: np.random.Generator,
    seed: int,
) -> list[dict[str, Any]]:
    """`draws` honest releases resampled from per-image results scored once."""
    jitters = 4
    plain = Scored(audit_release(honest, y, calibration, seed)[1], len(honest))
    blur = Scored(audit_release(blurred(honest), y, calibration, seed)[1], len(honest))
    repeats = np.concatenate([jittered(honest, rng) for _ in range(jitters)])
    jitter = Scored(audit_release(repeats, y, calibration, seed)[1], len(repeats))
    out = []
    for i in range(draws):
        size = (100, 250, 500)[i % 3]
        kind = ("held-out", "blurred", "collapsed", "jittered collapse")[(i // 3) % 4]
        if kind in ("held-out", "blurred"):
            picks = rng.choice(len(honest), size, replace=False)
            result = (plain if kind == "held-out" else blur).judge(picks, y, calibration, rng)
        else:
            few = rng.choice(len(honest), int(rng.integers(1, 21)), replace=False)
            chosen = few[rng.integers(0, len(few), size)]
            if kind == "collapsed":
                result = plain.judge(chosen, y, calibration, rng)
            else:  # each repeat one of the image's jittered versions
                copy = rng.integers(0, jitters, size)
                result = jitter.judge(copy * len(honest) + chosen, y, calibration, rng)
        out.append({"kind": kind, "n": size, **result})
    return out


# --------------------------------------------------------------------------- datasets


def dataset_settings(name: str, scratch: Path) -> dict[str, Any] | None:
    if name == "digits":
        return {"dataset": "digits"}
    if not ARCHIVE.exists():
        return None
    folder = scratch / "cifar10-jpeg"
    if not folder.exists():
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(folder, filter="data")
    return {
        "dataset": "imagefolder",
        "data_root": str(folder),
        "max_members": 750,
        "max_nonmembers": 750,
        "max_test": 500,
    }


def yardstick_of(
    config: RunConfig, data: ImageDataset, seed: int
) -> tuple[Split, Yardstick, dict[str, np.ndarray], np.ndarray]:
    """A split and its yardstick, calibration and honest images (the test part and the real
    row's release: records outside the pool)."""
    split = split_dataset(
        data,
        seed=seed,
        member_fraction=config.member_fraction,
        nonmember_fraction=config.nonmember_fraction,
        max_members=config.max_members,
        max_nonmembers=config.max_nonmembers,
        max_test=config.max_test,
    )
    y = make_yardstick(
        data.images,
        split.members,
        split.nonmembers,
        seed=seed,
        max_holdout=config.max_holdout,
        max_real=config.max_reference,
        nn_shift=config.nn_shift,
        nn_mirror=bool(config.nn_mirror),
    )
    calibration: dict[str, np.ndarray] = {
        m: ratios for m, (ratios, _) in calibration_ratios(y, device="cpu").items()
    }
    honest = data.images[np.concatenate([split.test, y.sets.real_release])]
    return split, y, calibration, honest


def run_dataset(name: str, settings: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    config = build_config(settings, seed=args.seed)
    data = load_dataset(config.dataset, config.data_root, image_size=config.image_size)
    started = time.perf_counter()
    split, y, calibration, honest = yardstick_of(config, data, args.seed)
    print(
        f"  {name}: {len(y.members)} members, {len(y.holdout)} held out, "
        f"{len(calibration[METRICS[0]])} calibration records, {len(y.transforms)} "
        f"transformations; calibration ratio minimum "
        + ", ".join(f"{m} {calibration[m].min():.3g}" for m in METRICS)
        + f" ({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    rng = np.random.default_rng([args.seed, 1])
    cases = planted(y.members, honest, rng)
    if not args.no_dp:
        cases += dp_releases(config, data, split, 500, dp2=args.dp2)
    rows = []
    for case, release in cases:
        row, _ = audit_release(release, y, calibration, args.seed)
        result = judged(row) | {"case": case, "n": len(release)}
        rows.append(result)
        print(f"  {name:9s} {case:40s} {_text(result)}", flush=True)
    draws: list[dict[str, Any]] = []
    for s in range(args.splits):
        seed = args.seed + 100 + s
        _, y_s, calibration_s, honest_s = yardstick_of(config, data, seed)
        draws += honest_draws(y_s, calibration_s, honest_s, args.draws, rng, seed)
        print(f"  {name}: split {s + 1} of {args.splits}: {len(draws)} honest draws", flush=True)
    rates = {}
    for level in LEVELS:
        fails = sum(d[level]["verdict"] == "FAIL" for d in draws)
        low, high = clopper_pearson_interval(fails, len(draws))
        by_kind = {
            kind: sum(d[level]["verdict"] == "FAIL" for d in draws if d["kind"] == kind)
            for kind in dict.fromkeys(d["kind"] for d in draws)
        }
        rates[level] = {"fails": fails, "draws": len(draws), "ci": [low, high], "by_kind": by_kind}
        print(
            f"  {name}: {fails} of {len(draws)} honest releases FAIL at the {level} level "
            f"({ALPHA:g} family-wise; 95% CI {low:.4f}-{high:.4f}); by kind {by_kind}"
        )
    return {
        "dataset": name,
        "members": len(y.members),
        "holdout": len(y.holdout),
        "calibration": len(calibration[METRICS[0]]),
        "calibration_minimum": {m: float(calibration[m].min()) for m in METRICS},
        "transforms": len(y.transforms),
        "cases": rows,
        "honest": {"splits": args.splits, "rates": rates, "draws": draws},
    }


def _text(result: dict[str, Any]) -> str:
    p = " ".join(f"{t}={v:.2g}" for t, v in result["p"].items())
    marks = "/".join(result[level]["verdict"] for level in LEVELS)
    return f"{marks}  {p} exact={result['exact_copies']} suspected={result['suspected']}"


def markdown(results: list[dict[str, Any]]) -> str:
    """One row per case, one column per dataset: the verdict at both levels, why, the smallest
    p-value and the suspected copies."""
    head = "| case | " + " | ".join(r["dataset"] for r in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]
    for i, case in enumerate(results[0]["cases"]):
        cells = []
        for r in results:
            c = r["cases"][i]
            one, three = c["one release"], c["three releases"]
            smallest = min(c["p"].values())
            why = ", ".join(one["failed"]) if one["failed"] else "-"
            mark = (
                one["verdict"]
                if one["verdict"] == three["verdict"]
                else (f"{one['verdict']} / {three['verdict']}")
            )
            cells.append(f"**{mark}** ({why}; min p {smallest:.2g}; {c['suspected']} suspected)")
        lines.append(f"| {case['case']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "cifar10"])
    parser.add_argument("--splits", type=int, default=3, help="random splits for honest draws")
    parser.add_argument("--draws", type=int, default=400, help="honest releases per split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="gate_power.json")
    parser.add_argument("--no-dp", action="store_true", help="skip the DP releases")
    parser.add_argument("--dp2", action="store_true", help="add DP^2-VAE at epsilon 1 and 10")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.datasets:
            settings = dataset_settings(name, Path(scratch))
            if settings is None:
                print(f"  {name}: skipped (no archive at {ARCHIVE})")
                continue
            results.append(run_dataset(name, settings, args))
    if not results:
        print("no dataset ran", file=sys.stderr)
        return 2
    write_text_atomic(Path(args.out), to_json(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Gather the stages' outputs into one results table (results.json / results.csv)."""

from __future__ import annotations

import logging
import math
from typing import Any

import pandas as pd

from audit.core import layout
from audit.core.accounting import rdp_epsilon
from audit.core.config import RunConfig
from audit.core.data import ImageDataset
from audit.core.layout import row_of
from audit.core.store import RunDir
from reports.columns import BASE_COLUMNS, SCHEMA_VERSION
from reports.thresholds import makes_formal_claim

log = logging.getLogger(__name__)

# what the DP rows' accounting treats as public, though it comes from the private data
DP_ASSUMPTIONS = (
    "the number of private records n: the sample rate (1 / ceil(n / batch size)), the number of "
    "steps and the noise multiplier are computed from it",
    "the number of classes and the balanced labels of the release",
    "DPD-fVAE: that every client holds a record (a partition leaving one empty stops the run); "
    "each record's client is a function of that record alone, and every client samples at one "
    "public rate",
    "the hyperparameters (epochs, batch size, clip norm, learning rate): set, not tuned on the "
    "private data; except that bn_match_dp's defaults (its teacher's recipe, the 7 layers whose "
    "statistics are released, the clip margin) were chosen by the developers on the default "
    "digits split, which they therefore do not cover",
)


def collect_results(store: RunDir, config: RunConfig, data: ImageDataset) -> dict[str, Any]:
    split = store.read_npz(layout.SPLIT)
    target = store.read_json(layout.TARGET_SUMMARY)
    privacy_info = store.read_json(layout.PRIVACY)
    privacy = privacy_info["rows"]
    utility = store.read_json(layout.UTILITY)["rows"]
    releases = store.read_json(layout.GENERATE)["releases"]
    rows: list[dict[str, Any]] = []
    for release in releases:
        name = row_of(release)
        fixed = ("generator", "k", "epsilon", "path", "n_synthetic")
        extra = {k: v for k, v in release.items() if k not in fixed}
        rows.append(
            {
                "generator": release["generator"],
                "k": release["k"],
                "epsilon": release.get("epsilon"),
                "n_synthetic": release["n_synthetic"],
                **privacy[name],
                **_utility_columns(utility[name]),
                **extra,
            }
        )
    rows.append(
        {
            "generator": "real",
            "k": None,
            "epsilon": None,
            "n_synthetic": len(split["members"]),
            **privacy["real"],
            **_utility_columns(utility["real"]),
        }
    )
    rows.append(  # the baseline: what releasing the target model itself would leak
        {
            "generator": "target",
            "k": None,
            "epsilon": None,
            "n_synthetic": None,
            "utility_acc": target["acc_test"],
        }
    )
    # columns contributed by registered stages (attacks): columns/<stage>.json = {row: {col: value}}
    extra_columns = sorted((store.root / layout.COLUMNS_DIR).glob("*.json"))
    for path in extra_columns:
        contributed = store.read_json(layout.stage_columns(path.stem))
        for row in rows:
            name = row_of(row)
            row.update(contributed.get(name, {}))
    for row in rows:  # the worst empirical epsilon over every attack family that scored the row
        bounds = [
            v for key, v in row.items() if key.endswith("_eps_lower") and isinstance(v, float)
        ]
        if bounds:
            row["eps_lower"] = max(bounds)
    notes = {
        "real_row": "generator 'real': utility of the same recipe trained on the real members; "
        "its privacy columns score held-out non-members offered as a release (n_scored of them, "
        "disjoint from the holdout yardstick) on the same tests: what chance looks like.",
        "target_row": "generator 'target': the target model itself (utility_acc is its test "
        "accuracy); its mia_model_* columns are what releasing the model instead would leak.",
        "attack_columns": "mia_release_* attack the released images, mia_model_* the model "
        "trained on them. Each family's columns are its strongest attack (mia_*_attack), chosen "
        "by AUC on a random half of the candidates and measured on the other half, so the "
        "choice does not bias the figure upwards: AUC with its 95% bootstrap CI, the one-sided "
        "Mann-Whitney p-value of AUC > 0.5, TPR at 1% FPR (empty where the half's non-members "
        "cannot resolve it) and eps_lower; eps_lower is the max over the families.",
        "holdout_columns": "Every similarity below compares a released image with each private "
        "image as it is, shifted by up to nn_shift px and (nn_mirror) mirrored, the best "
        "counting. holdout_share_*: the share of released images whose nearest image among all "
        "members and the held-out non-members is a member (holdout_share_*_expected when "
        "nothing is memorised), with a Clopper-Pearson 95% CI and a one-sided permutation "
        "p-value. copy_count_*: members with a suspected copy, i.e. nearest a released image "
        "whose distance to them, relative to its nearest held-out record, is smaller than any "
        "of n_calibration private records shows against the others, with a beta-binomial "
        "p-value. "
        "exact_copies: released images within +-2 grey levels of a (transformed) member at "
        "every pixel.",
    }
    attacks = {  # per-attack figures with confidence intervals, for the report
        family: store.read_json(layout.summary(family))
        for family in ("mia_release", "mia_model")
        if store.path(layout.summary(family)).exists()
    }
    reconstruction = {  # inversion per model; feature inversion and HCR bounds per noise scale
        name: store.read_json(layout.summary(name))
        for name in ("inversion", "features")
        if store.path(layout.summary(name)).exists()
    }
    if "mia_model" in attacks:
        notes["mia_model_attacks"] = attacks["mia_model"]["note"]
    if target.get("membership_note"):  # what "member" means with loaded weights
        notes["membership"] = target["membership_note"]
    return {
        "schema_version": SCHEMA_VERSION,
        "config_digest": config.digest(),
        "dataset": {
            "name": data.name,
            "image_size": data.image_size,
            "channels": data.channels,
            "classes": list(data.classes),
            "n_members": len(split["members"]),
            "n_nonmembers": len(split["nonmembers"]),
            "n_test": len(split["test"]),
        },
        "target": target,
        "similarity_levels": list(config.similarity_levels),
        "eps_delta": config.eps_delta,
        "holdout": {
            "n_holdout": len(privacy_info["holdout_nonmembers"]),
            "n_calibration_members": len(privacy_info["calibration_members"]),
            "transforms": privacy_info["transforms"],
            "n_real_release": len(privacy_info["reference_nonmembers"]),
            **privacy_info["holdout"],
        },
        "notes": notes,
        "dp": dp_summary(rows, len(split["members"]), config.dp.delta),
        "rows": rows,
        "attacks": attacks,
        **reconstruction,
    }


def _utility_columns(row: dict[str, Any]) -> dict[str, Any]:
    """utility_acc (mean over seeds) and, when several seeds ran, utility_acc_std; the list of
    per-seed accuracies stays in utility.json."""
    return {k: v for k, v in row.items() if k in ("utility_acc", "utility_acc_std")}


def columns(rows: list[dict[str, Any]]) -> list[str]:
    ordered = list(BASE_COLUMNS)
    for row in rows:
        ordered.extend(key for key in row if key not in ordered)
    return ordered


def results_csv(rows: list[dict[str, Any]]) -> str:
    """The results table as CSV: pandas writes it (quoting, missing cells as empty fields), the
    cells formatted first so a column mixing integers and blanks keeps its integers."""
    frame = pd.DataFrame(
        [{k: _cell(v) for k, v in row.items()} for row in rows], columns=columns(rows), dtype=object
    )
    return str(frame.to_csv(index=False, lineterminator="\n", na_rep=""))


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _phases(row: dict[str, Any]) -> list[tuple[float, float, int]]:
    """A formal DP row's phases for the run-level accountant: its dp_phases, else (a row saved
    before they were) its triple, plus a statistics release where the row states one."""
    if row.get("dp_phases"):
        return [(float(n), float(q), int(steps)) for n, q, steps in row["dp_phases"]]
    phases = [
        (float(row["dp_noise_multiplier"]), float(row["dp_sample_rate"]), int(row["dp_steps"]))
    ]
    if row.get("dp_statistics_noise") is not None:  # bn_match_dp: its release, once, on all
        phases.append((float(row["dp_statistics_noise"]), 1.0, 1))
    return phases


def dp_summary(rows: list[dict[str, Any]], n_members: int, delta: float) -> dict[str, Any]:
    """The run-level DP figures: every formal DP row's training composed in one RDP accountant
    (each row released from the same members: a record's total cost), which released rows that
    composition does not cover, whether delta >= 1/n, and what is treated as public.

    Each row enters with its phases (`dp_phases`); a row saved before that column existed
    enters as (its smallest noise multiplier, its largest sample rate, all its steps), exact
    where its phases share noise and rate, an upper bound otherwise.
    """
    released = [r for r in rows if r["generator"] not in ("real", "target")]
    formal = [r for r in released if makes_formal_claim(r)]
    phases = [phase for r in formal for phase in _phases(r)]
    uncovered = [row_of(r) for r in released if r not in formal]
    large_delta = bool(formal) and delta >= 1 / max(n_members, 1)
    if large_delta:
        log.warning(
            "delta %g >= 1/n = 1/%d: a mechanism that publishes one random record in full "
            "meets this delta; choose delta well below 1/n",
            delta,
            n_members,
        )
    return {
        "rows": [row_of(r) for r in formal],
        "composed_epsilon": rdp_epsilon(phases, delta=delta) if phases else None,
        "delta": delta,
        "not_covered": uncovered,
        "n_members": n_members,
        "delta_at_least_1_over_n": large_delta,
        "assumptions": list(DP_ASSUMPTIONS),
    }

"""The column dictionary's rules and the report's own columns (the row, the verdict, similarity,
the holdout tests, utility, fidelity). Every other producer declares its columns beside its code
(a generator's plugin, an attack family's stage); audit/engine/columns.py gathers them all into
the one dictionary, docs/columns.md is generated from it (`python -m audit.docs`, checked by a
test) and a test checks that every column a run writes is in it.

Names are lower-case letters, digits and underscores, so `df.nn_ssim_max` in pandas and
`.rows[].nn_ssim_max` in jq work as written: a similarity level 0.9 becomes `0_9`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from audit.core.columns import (
    FID,
    GATE,
    GROUPS,
    HOLD,
    LESS_LEAKAGE,
    LESS_UTILITY,
    MORE_LEAKAGE,
    MORE_UTILITY,
    NEUTRAL,
    ROW,
    SIM,
    UTIL,
    Column,
)

# results.json's layout; bumped whenever a column is renamed or removed or its meaning changes
# (adding a column does not change it). Version 2: safe names (frac_above_0_9, tpr_at_0_1fpr),
# the verdict per release, schema_version itself. Version 3: transformation-aware neighbours, the
# holdout share over every member (its chance in holdout_share_*_expected, a Clopper-Pearson CI),
# copy_count_* in place of copy_share_*.
SCHEMA_VERSION = 4

# results.csv's leading columns, in this order; the rest follow in the order the stages add them
# (renaming or removing one bumps SCHEMA_VERSION)
BASE_COLUMNS = (
    "generator",
    "k",
    "epsilon",
    "n_synthetic",
    "nn_ssim_mean",
    "nn_ssim_p95",
    "nn_ssim_max",
    "nn_haarpsi_mean",
    "nn_haarpsi_p95",
    "nn_haarpsi_max",
    "utility_acc",
    "verdict",
)

SAFE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

PLACEHOLDERS = {
    "metric": r"(ssim|haarpsi)",
    "level": r"[0-9]+(_[0-9]+)?",  # a --similarity-levels value, its dot written as _
    "family": r"(mia_release|mia_model)",
    "score": r"(blackbox_ssim_label|whitebox_gradient|whitebox_loss|whitebox)",
}

REPORT_COLUMNS: tuple[Column, ...] = (
    Column(
        "generator",
        "what made the row: bn_match, dp_vae, dp2_vae, dpd_fvae, dpd_fvae_published, vae, "
        "external; `real` (held-out records offered as a release: the chance baseline) or "
        "`target` (the model itself)",
        "text",
        NEUTRAL,
        ROW,
    ),
    Column("k", "BN-matching steps of this release (bn_match only)", "integer >= 1", NEUTRAL, ROW),
    Column("epsilon", "target epsilon of a DP generator's release", "> 0", NEUTRAL, ROW),
    Column(
        "n_synthetic",
        "images released (the `real` row: the members its utility model trains on)",
        "integer >= 1",
        NEUTRAL,
        ROW,
    ),
    Column("n_scored", "released images whose similarity was scored", "integer >= 1", NEUTRAL, ROW),
    Column(
        "verdict",
        "the gate's verdict under the shipped thresholds when the run finished: pass or fail "
        "(`audit check DIR` re-judges under any file); empty on the baseline rows",
        "pass | fail",
        NEUTRAL,
        GATE,
    ),
    *(
        Column(
            f"nn_{{metric}}_{stat}",
            f"{what} of each released image's similarity to its nearest member ({{metric}}: "
            "SSIM or HaarPSI, 1 = identical)",
            "[0, 1]",
            MORE_LEAKAGE,
            SIM,
        )
        for stat, what in (("mean", "mean"), ("p95", "95th percentile"), ("max", "maximum"))
    ),
    Column(
        "nn_{metric}_frac_above_{level}",
        "share of released images whose nearest member scores above the level (0_9 = 0.9); "
        "compare the `real` row's",
        "[0, 1]",
        MORE_LEAKAGE,
        SIM,
    ),
    Column(
        "holdout_share_{metric}",
        "share of released images whose nearest image among every member and the held-out "
        "records is a member (compared under mirror and shifts, ties by a random pool order); "
        "holdout_share_{metric}_expected when nothing is memorised",
        "[0, 1]",
        MORE_LEAKAGE,
        HOLD,
    ),
    Column(
        "holdout_share_{metric}_ci_low",
        "Clopper-Pearson 95% lower bound of holdout_share_{metric}: the generator's share "
        "against this pool if released images are independent draws (the test against chance "
        "is the permutation p-value, which does not assume that)",
        "[0, 1]",
        MORE_LEAKAGE,
        HOLD,
    ),
    Column(
        "holdout_share_{metric}_ci_high",
        "Clopper-Pearson 95% upper bound of holdout_share_{metric}",
        "[0, 1]",
        MORE_LEAKAGE,
        HOLD,
    ),
    Column(
        "holdout_share_{metric}_expected",
        "holdout_share_{metric} when nothing is memorised: members / (members + held-out "
        "records) in the pool",
        "(0, 1)",
        NEUTRAL,
        HOLD,
    ),
    Column(
        "holdout_share_{metric}_p",
        "one-sided permutation p-value of holdout_share_{metric} above its expected value (the "
        "pool's member and held-out labels relabelled at random; the gate's test)",
        "(0, 1]",
        LESS_LEAKAGE,
        HOLD,
    ),
    Column(
        "copy_count_{metric}",
        "members with a suspected copy: nearest a released image whose stand-out ratio "
        "(distance to its nearest member / to its nearest held-out record, 1 - {metric}) is "
        "below every calibration record's",
        "integer >= 0",
        MORE_LEAKAGE,
        HOLD,
    ),
    Column(
        "copy_count_{metric}_images",
        "released images whose stand-out ratio is below every calibration record's",
        "integer >= 0",
        MORE_LEAKAGE,
        HOLD,
    ),
    Column(
        "copy_count_{metric}_expected",
        "released images expected to stand out when nothing is memorised: n / (n_calibration + 1)",
        ">= 0",
        NEUTRAL,
        HOLD,
    ),
    Column(
        "copy_count_{metric}_p",
        "beta-binomial p-value of copy_count_{metric} (the gate's test; exact when the "
        "calibration ratios are exchangeable with the released images', approximate here)",
        "(0, 1]",
        LESS_LEAKAGE,
        HOLD,
    ),
    Column(
        "copy_ratio_threshold_{metric}",
        "the smallest stand-out ratio among the calibration records: a released image below "
        "it stands out",
        ">= 0",
        NEUTRAL,
        HOLD,
    ),
    Column(
        "n_calibration",
        "private records that calibrate copy detection, each scored against the others: the "
        "held-out records and up to max_holdout members",
        "integer > 0",
        NEUTRAL,
        HOLD,
    ),
    Column(
        "n_pool_members",
        "members in the holdout share's pool (all of them)",
        "integer > 0",
        NEUTRAL,
        HOLD,
    ),
    Column(
        "n_pool_holdout",
        "held-out records in the holdout share's pool",
        "integer > 0",
        NEUTRAL,
        HOLD,
    ),
    Column(
        "exact_copies",
        "released images within +-2 grey levels of a member at every pixel, as it is or "
        "mirrored or shifted (on the pixels both hold)",
        "integer >= 0",
        MORE_LEAKAGE,
        HOLD,
    ),
    Column(
        "utility_acc",
        "test accuracy of ResNet20 trained from scratch on the row's images (mean over "
        "--utility-seeds); `target`: the target model's",
        "[0, 1]",
        MORE_UTILITY,
        UTIL,
    ),
    Column(
        "utility_acc_std",
        "standard deviation of utility_acc over the seeds",
        ">= 0",
        NEUTRAL,
        UTIL,
    ),
    Column(
        "fd_eval",
        "Frechet distance to held-out images in the features of a classifier trained on the "
        "test split",
        ">= 0",
        LESS_UTILITY,
        FID,
    ),
    Column(
        "fid_inception",
        "FID with torchvision's Inception v3 (only with --inception-weights)",
        ">= 0",
        LESS_UTILITY,
        FID,
    ),
    Column("fd_n_images", "images the Frechet distances used", "integer >= 1", NEUTRAL, FID),
)


@functools.cache
def _pattern(column: Column) -> re.Pattern[str]:
    text = re.escape(column.name)
    for key, rx in PLACEHOLDERS.items():
        text = text.replace(re.escape("{" + key + "}"), rx)
    return re.compile(f"^{text}$")


def describe(name: str, columns: Sequence[Column]) -> Column | None:
    """The dictionary entry of a results column.

    Args:
        name: a column name as a run writes it ("nn_ssim_frac_above_0_9").
        columns: the dictionary (audit/engine/columns.py COLUMNS).

    Returns:
        The entry (an exact name before a pattern with placeholders), or None if unknown.
    """
    exact = next((c for c in columns if "{" not in c.name and c.name == name), None)
    if exact is not None:
        return exact
    return next((c for c in columns if "{" in c.name and _pattern(c).match(name)), None)


def markdown(columns: Sequence[Column]) -> str:
    """The dictionary as markdown tables, one per group (docs/columns.md's generated part).

    Args:
        columns: the dictionary, in the order each group lists them.

    Returns:
        Markdown text ending in a newline.
    """
    lines = [
        f"results.json carries `schema_version` {SCHEMA_VERSION}. One row per release, plus "
        "the baselines `real` (held-out non-members offered as a release: what chance looks "
        "like on every test) and `target` (the target model itself). A column a run did not "
        "measure is empty in results.csv and null in results.json.",
        "",
        "Placeholders: `{metric}` is `ssim` or `haarpsi`; `{level}` a `--similarity-levels` "
        "value with its dot written as `_` (0.9 -> `0_9`); `{family}` is `mia_release` (attacks "
        "on the images) or `mia_model` (attacks on the model retrained on them); `{score}` a "
        "canary score.",
        "",
        "Order in results.csv: " + ", ".join(f"`{c}`" for c in BASE_COLUMNS) + " first, then "
        "the others in the order the stages add them (a column a run did not compute is "
        "absent). The tables below group them by meaning.",
        "",
        "Direction: which way is worse. *higher = more leakage*: the privacy figure grows with "
        "memorisation; *higher = less leakage*: a p-value (small values are evidence of "
        "memorisation); *higher = more utility* / *less utility*; *descriptive*: a size, "
        "setting or name.",
    ]
    for group in [g for g in GROUPS if any(c.group == g for c in columns)]:
        lines += ["", f"## {group[0].upper()}{group[1:]}", ""]
        lines += ["| column | meaning | range | direction |", "|---|---|---|---|"]
        for c in columns:
            if c.group == group:
                meaning = c.meaning.replace("|", "\\|")
                lines.append(
                    f"| `{c.name}` | {meaning} | {c.range.replace('|', 'or')} | {c.direction} |"
                )
    return "\n".join(lines) + "\n"

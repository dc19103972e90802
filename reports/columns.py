"""The column dictionary: every column results.json and results.csv can hold, what it means, its
range and which way is worse. The one place columns are described; docs/columns.md is generated
from it (`python -m audit.docs`, checked by a test) and a test checks
that every column a run writes is here.

Names are lower-case letters, digits and underscores, so `df.nn_ssim_max` in pandas and
`.rows[].nn_ssim_max` in jq work as written: a similarity level 0.9 becomes `0_9`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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

MORE_LEAKAGE = "higher = more leakage"
LESS_LEAKAGE = "higher = less leakage"  # p-values: small is evidence of memorisation
MORE_UTILITY = "higher = more utility"
LESS_UTILITY = "higher = less utility"  # distances between synthetic and real images
NEUTRAL = "descriptive"  # sizes, settings, names: neither better nor worse


@dataclass(frozen=True)
class Column:
    name: str  # may hold {metric} (ssim, haarpsi), {level}, {family}, {score}: see PLACEHOLDERS
    meaning: str
    range: str
    direction: str
    group: str


PLACEHOLDERS = {
    "metric": r"(ssim|haarpsi)",
    "level": r"[0-9]+(_[0-9]+)?",  # a --similarity-levels value, its dot written as _
    "family": r"(mia_release|mia_model)",
    "score": r"(blackbox_ssim_label|whitebox_gradient|whitebox_loss|whitebox)",
}

ROW, SIM, HOLD, UTIL, FID, MIA, INV, DP, CANARY, GATE = (
    "row",
    "similarity",
    "holdout tests",
    "utility",
    "fidelity",
    "membership attacks",
    "model inversion",
    "DP claim",
    "canary audit",
    "verdict",
)

COLUMNS: tuple[Column, ...] = (
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
    Column("bn_loss", "BN-matching loss at step k (the optimised objective)", ">= 0", NEUTRAL, ROW),
    Column(
        "bn_stat_distance",
        "distance of the release's BN statistics from the target's running statistics",
        ">= 0",
        NEUTRAL,
        ROW,
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
    Column(
        "inversion_nn_ssim_member",
        "model inversion (priors): mean SSIM of each reconstruction to its nearest member",
        "[0, 1]",
        MORE_LEAKAGE,
        INV,
    ),
    Column(
        "inversion_nn_ssim_nonmember",
        "the same to the nearest non-member: the yardstick for inversion_nn_ssim_member",
        "[0, 1]",
        NEUTRAL,
        INV,
    ),
    Column(
        "inversion_eval_acc",
        "share of priors reconstructions an independent classifier assigns to the class "
        "they were inverted for",
        "[0, 1]",
        MORE_LEAKAGE,
        INV,
    ),
    Column(
        "inversion_miface_eval_acc",
        "the same for the MI-Face variant (no priors)",
        "[0, 1]",
        MORE_LEAKAGE,
        INV,
    ),
    Column(
        "{family}_attack",
        "the family's strongest attack, chosen by AUC on a random half of the candidates "
        "(mia_release: on the images; mia_model: on the model retrained on them)",
        "text",
        NEUTRAL,
        MIA,
    ),
    Column(
        "{family}_auc",
        "that attack's AUC on the other half; 0.5 is chance",
        "[0, 1]",
        MORE_LEAKAGE,
        MIA,
    ),
    Column(
        "{family}_auc_ci_low", "95% bootstrap lower bound of the AUC", "[0, 1]", MORE_LEAKAGE, MIA
    ),
    Column(
        "{family}_auc_ci_high", "95% bootstrap upper bound of the AUC", "[0, 1]", MORE_LEAKAGE, MIA
    ),
    Column(
        "{family}_p",
        "p-value that the attack beats chance (the smaller of a Mann-Whitney and a threshold "
        "test, doubled)",
        "(0, 1]",
        LESS_LEAKAGE,
        MIA,
    ),
    Column(
        "{family}_tpr_at_1fpr",
        "true-positive rate at 1% false-positive rate; empty where the non-members cannot "
        "resolve 1%",
        "[0, 1]",
        MORE_LEAKAGE,
        MIA,
    ),
    Column(
        "{family}_tpr_at_0_1fpr",
        "true-positive rate at 0.1% false-positive rate; empty where the non-members cannot "
        "resolve 0.1% (fewer than 1,000 of them)",
        "[0, 1]",
        MORE_LEAKAGE,
        MIA,
    ),
    Column(
        "{family}_eps_lower",
        "empirical epsilon lower bound implied by the attack's TPR/FPR at eps_delta",
        ">= 0",
        MORE_LEAKAGE,
        MIA,
    ),
    Column(
        "mia_release_target_feature_l2_auc",
        "AUC of an insider diagnostic (distance in the target's own features), outside the "
        "worst case and the gate",
        "[0, 1]",
        MORE_LEAKAGE,
        MIA,
    ),
    Column("eps_lower", "the largest {family}_eps_lower", ">= 0", MORE_LEAKAGE, MIA),
    Column("dp_private", "the row claims differential privacy", "true", NEUTRAL, DP),
    Column(
        "eps_accountant",
        "the epsilon the RDP accountant charges for the training actually run",
        "> 0",
        MORE_LEAKAGE,
        DP,
    ),
    Column("dp_delta", "delta of the DP claim", "(0, 1)", NEUTRAL, DP),
    Column(
        "dp_noise_multiplier",
        "DP-SGD noise multiplier (the weakest phase's)",
        "> 0",
        LESS_LEAKAGE,
        DP,
    ),
    Column("dp_sample_rate", "Poisson sampling rate per step", "(0, 1]", NEUTRAL, DP),
    Column("dp_steps", "DP-SGD steps taken", "integer >= 0", NEUTRAL, DP),
    Column("dp_accountant", "which accountant computed eps_accountant", "text", NEUTRAL, DP),
    Column("dp_clients", "DPD-fVAE: simulated clients", "integer >= 1", NEUTRAL, DP),
    Column("fl_rounds", "DPD-fVAE: federated rounds run", "integer >= 0", NEUTRAL, DP),
    Column(
        "dp_formal",
        "eps_accountant is a theorem: every parameter that saw a private record was trained "
        "with DP-SGD and charged (false: the published DPD-fVAE's non-private encoders; the gate "
        "does not check such a claim)",
        "true | false",
        NEUTRAL,
        DP,
    ),
    Column(
        "eps_audit",
        "95% lower bound on epsilon from the one-run canary audit (--canaries); above "
        "eps_accountant the DP claim is false",
        ">= 0",
        MORE_LEAKAGE,
        CANARY,
    ),
    Column(
        "eps_audit_max",
        "the largest eps_audit a perfect attack (every guess right) could give with these "
        "canaries and scores; a claim at or above it cannot be refuted: the audit is "
        "uninformative about it",
        ">= 0",
        NEUTRAL,
        CANARY,
    ),
    Column(
        "eps_audit_confidence",
        "confidence of eps_audit (overall, after the split among scores)",
        "(0, 1)",
        NEUTRAL,
        CANARY,
    ),
    Column(
        "canaries",
        "canaries behind the best bound (each included by a fair coin)",
        "integer >= 2",
        NEUTRAL,
        CANARY,
    ),
    Column(
        "canary_guesses",
        "guesses behind the best bound",
        "integer >= 0",
        NEUTRAL,
        CANARY,
    ),
    Column("canary_correct", "right guesses among them", "integer >= 0", MORE_LEAKAGE, CANARY),
    Column(
        "eps_audit_score",
        "the score that gave eps_audit; empty when none refutes epsilon 0",
        "text",
        NEUTRAL,
        CANARY,
    ),
    Column(
        "eps_audit_{score}",
        "eps_audit by one score: blackbox_ssim_label (SSIM to the nearest released image of "
        "the canary's label), whitebox (the released model's fit), whitebox_gradient (Dirac "
        "gradient canaries in DP-SGD), whitebox_loss (the target model's loss)",
        ">= 0",
        MORE_LEAKAGE,
        CANARY,
    ),
    Column(
        "eps_audit_max_{score}",
        "what a perfect attack by that score could reach (at its share of the confidence)",
        ">= 0",
        NEUTRAL,
        CANARY,
    ),
    Column("canaries_{score}", "canaries that score ranks", "integer >= 2", NEUTRAL, CANARY),
    Column(
        "dp_claim_audited",
        "the claim the audit tested: the audit run's own eps_accountant (its DP schedule is "
        "planned for the members and every canary, and its trainings carry the gradient "
        "canaries)",
        "> 0",
        NEUTRAL,
        CANARY,
    ),
    Column(
        "dp_claim_p",
        "p-value of H0 'the training is (dp_claim_audited, dp_delta)-DP' (Steinke et al.; "
        "Bonferroni over scores and guess counts); the gate's dp_claim test",
        "[0, 1]",
        LESS_LEAKAGE,
        CANARY,
    ),
    Column(
        "dp_claim_p_min",
        "the p-value a perfect attack would get: a level below it cannot be reached",
        "[0, 1]",
        NEUTRAL,
        CANARY,
    ),
    Column(
        "dp_claim_status",
        "refuted (eps_audit above the claim) | not refuted | uninformative (the claim at or "
        "above eps_audit_max) | not formal (; refuted); per row at 95%, unadjusted: the gate's "
        "dp_claim test judges dp_claim_p at its family-wise level",
        "text",
        NEUTRAL,
        CANARY,
    ),
    Column(
        "dp_claim_violated",
        "eps_audit > the claim: the canary audit refutes the DP claim at 95%",
        "true | false",
        MORE_LEAKAGE,
        CANARY,
    ),
)


def _pattern(column: Column) -> re.Pattern[str]:
    text = re.escape(column.name)
    for key, rx in PLACEHOLDERS.items():
        text = text.replace(re.escape("{" + key + "}"), rx)
    return re.compile(f"^{text}$")


_EXACT = {c.name: c for c in COLUMNS if "{" not in c.name}
_PATTERNS = [(c, _pattern(c)) for c in COLUMNS if "{" in c.name]


def describe(name: str) -> Column | None:
    """The dictionary entry of a results column (exact names before patterns); None if unknown."""
    if name in _EXACT:
        return _EXACT[name]
    return next((c for c, rx in _PATTERNS if rx.match(name)), None)


def markdown() -> str:
    """The dictionary as markdown tables, one per group (docs/columns.md's generated part)."""
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
    for group in dict.fromkeys(c.group for c in COLUMNS):
        lines += ["", f"## {group[0].upper()}{group[1:]}", ""]
        lines += ["| column | meaning | range | direction |", "|---|---|---|---|"]
        for c in COLUMNS:
            if c.group == group:
                meaning = c.meaning.replace("|", "\\|")
                lines.append(
                    f"| `{c.name}` | {meaning} | {c.range.replace('|', 'or')} | {c.direction} |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")

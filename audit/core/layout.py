"""Every run-directory artifact, by name: the one place the suite spells a file name.

A stage writes its artifacts under these names and a task reads only those of the stages it
declares (audit/engine/spec.py Stage.reads, Task.reads; the scheduler checks). docs/outputs.md
describes each one for users.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# the run: its manifest and its final outputs (written only when every stage succeeded)
CONFIG = "config.json"
RESULTS = "results.json"
RESULTS_CSV = "results.csv"
REPORT = "report.html"
FINAL_OUTPUTS = (RESULTS, RESULTS_CSV, REPORT)
STAGE_RECORDS = "stages"  # stages/<stage>.json, stages/<stage>/<row>.json: reuse records

SPLIT = "split.npz"  # members, non-members and test indices
TARGET = "target.pt"  # the target classifier's weights
TARGET_SUMMARY = "target.json"
GENERATE = "generate.json"  # every release: its generator, K or epsilon, path and columns
PRIVACY = "privacy.json"
HOLDOUT_SCORES = "privacy/holdout.npz"
UTILITY = "utility.json"
REFS = "refs.json"
POPULATION_MODEL = "population_model.pt"
POPULATION_SUMMARY = "population_model.json"
EXHIBITS = "exhibits.npz"  # the report's private images, redactable
COLUMNS_DIR = "columns"


def summary(stage: str) -> str:
    """A stage's summary file: "mia_release.json", "inversion.json", "canaries.json"...

    Args:
        stage: the stage's name ("mia_release", "canaries"...).

    Returns:
        "<stage>.json", relative to the run directory.
    """
    return f"{stage}.json"


def stage_columns(stage: str) -> str:
    """The results columns a stage adds, {row: {column: value}}: columns/<stage>.json.

    Args:
        stage: the stage's name ("mia_release", "canaries"...).

    Returns:
        "columns/<stage>.json", relative to the run directory.
    """
    return f"{COLUMNS_DIR}/{stage}.json"


def _setting(k: int | None, epsilon: float | None) -> str | None:
    if k is not None:
        return f"k{k}"
    return None if epsilon is None else f"eps{epsilon:g}"


def row_name(generator: str, k: int | None, epsilon: float | None = None) -> str:
    """The key of a results row in every stage's output: "bn_match-k200" (a K), "dp_vae-eps10"
    (a DP generator's target epsilon), or the generator alone ("real", "vae": neither).

    Args:
        generator: the generator's name ("bn_match", "dp_vae", "real"...).
        k: the release's K (images per class, >= 1); None where the generator takes none.
        epsilon: a DP generator's target epsilon (> 0), written with %g; used only when k is
            None; None where the generator has no privacy budget.

    Returns:
        "<generator>-k<K>", "<generator>-eps<epsilon>" or "<generator>".
    """
    setting = _setting(k, epsilon)
    return generator if setting is None else f"{generator}-{setting}"


def row_of(entry: Mapping[str, Any]) -> str:
    """row_name of a release entry or results row (its generator, k and epsilon fields).

    Args:
        entry: a mapping with a "generator" key and optional "k" and "epsilon" keys (a missing
            key counts as None).

    Returns:
        The row's name, as row_name gives it.

    Raises:
        KeyError: entry has no "generator".
    """
    return row_name(entry["generator"], entry.get("k"), entry.get("epsilon"))


def synthetic(generator: str, k: int | None, epsilon: float | None = None) -> str:
    """A release's images and labels: bn_match keeps the documented synthetic/k{K}.npz; other
    generators are prefixed (synthetic/dp_vae-eps10.npz, synthetic/external-set.npz).

    Args:
        generator: the generator's name ("bn_match", "dp_vae", "external"...).
        k: the release's K (images per class, >= 1); None where the generator takes none.
        epsilon: a DP generator's target epsilon (> 0), used only when k is None; None where
            there is none (with k also None the file is "<generator>-set.npz").

    Returns:
        The .npz path, relative to the run directory.
    """
    suffix = _setting(k, epsilon) or "set"
    return (
        f"synthetic/{suffix}.npz"
        if generator == "bn_match"
        else f"synthetic/{generator}-{suffix}.npz"
    )


def checkpoint(generator: str, k: int) -> str:
    """BN matching's optimiser state at K, from which a later run goes on to a larger K.

    Args:
        generator: the generator's name ("bn_match").
        k: the K the state was saved at (images per class, >= 1).

    Returns:
        "checkpoints/<generator>-k<K>.npz", relative to the run directory.
    """
    return f"checkpoints/{row_name(generator, k)}.npz"


def checkpoints_of(generator: str) -> str:
    """A glob of every checkpoint of one generator (a later run goes on from the largest).

    Args:
        generator: the generator's name ("bn_match").

    Returns:
        The glob pattern "checkpoints/<generator>-k*.npz", relative to the run directory.
    """
    return f"checkpoints/{generator}-k*.npz"


def privacy_scores(row: str) -> str:
    """One row's nearest-neighbour scores and holdout statistics.

    Args:
        row: a results row's name (row_name: "bn_match-k200", "dp_vae-eps10", "vae").

    Returns:
        "privacy/<row>.npz", relative to the run directory.
    """
    return f"privacy/{row}.npz"


def model(row: str) -> str:
    """The classifier retrained on one release (its utility model, which mia_model attacks).

    Args:
        row: a results row's name (row_name: "bn_match-k200", "dp_vae-eps10", "vae").

    Returns:
        "models/<row>.pt", relative to the run directory.
    """
    return f"models/{row}.pt"


def reference(index: int) -> str:
    """One reference pipeline's outputs (--mia-refs).

    Args:
        index: the reference's number (>= 0).

    Returns:
        "refs/ref<index>.npz", relative to the run directory.
    """
    return f"refs/ref{index}.npz"


def mia_scores(family: str, row: str) -> str:
    """Per-candidate scores of one membership family on one row: mia/release-<row>.npz (attacks
    on the released images) or mia/model-<row>.npz (attacks on a classifier).

    Args:
        family: the membership family's stage name; "mia_release" gives the release- prefix,
            any other name the model- prefix.
        row: a results row's name (row_name: "bn_match-k200", "dp_vae-eps10", "vae").

    Returns:
        The .npz path, relative to the run directory.
    """
    prefix = "release" if family == "mia_release" else "model"
    return f"mia/{prefix}-{row}.npz"


def reconstructions(row: str, variant: str) -> str:
    """Model inversion's reconstructions of one attacked model, one variant.

    Args:
        row: a results row's name (row_name: "bn_match-k200", "dp_vae-eps10", "vae").
        variant: the inversion variant's name.

    Returns:
        "inversion/<row>-<variant>.npz", relative to the run directory.
    """
    return f"inversion/{row}-{variant}.npz"


def feature_reconstructions(row: str) -> str:
    """Feature inversion's reconstructions of one attacked model.

    Args:
        row: a results row's name (row_name: "bn_match-k200", "dp_vae-eps10", "vae").

    Returns:
        "features/<row>.npz", relative to the run directory.
    """
    return f"features/{row}.npz"

"""The report's panels of reconstructed images: model inversion's per class and variant, and
feature inversion's beside the members it reconstructs (private images through the gallery's
`PrivateImages`, so a redacted report shows none)."""

from __future__ import annotations

from typing import Any

from audit.core import layout
from audit.core.store import RunDir
from reports.gallery import Panel, PrivateImages, Tile, image_uri, private_tile


def inversion_panels(store: RunDir, inversion: dict[str, Any], classes: list[str]) -> list[Panel]:
    """Per attacked model: the reconstructions of each variant, one column per class."""
    panels = []
    for row, variants in inversion["models"].items():
        rows = []
        for variant in variants:
            saved = store.read_npz(layout.reconstructions(row, variant))
            rows.append(
                [
                    Tile(
                        image_uri(image),
                        f"{variant}, class {classes[int(label)]}: SSIM {member:.2f} member / "
                        f"{nonmember:.2f} non-member{'' if correct else ' (not recognised)'}",
                    )
                    for image, label, member, nonmember, correct in zip(
                        saved["images"],
                        saved["labels"],
                        saved["ssim_member"],
                        saved["ssim_nonmember"],
                        saved["evaluator_correct"],
                        strict=True,
                    )
                ]
            )
        panels.append(
            Panel(
                title=f"Model inversion of {row}",
                note="rows: variants; each caption gives the nearest same-class member's and "
                "non-member's SSIM and whether the evaluation classifier recognised the class",
                rows=rows,
            )
        )
    return panels


def feature_panels(
    store: RunDir, features: dict[str, Any], private: PrivateImages, n_show: int = 8
) -> list[Panel]:
    """Per attacked model: the first n_show victims (private) above their reconstructions from
    features at each noise scale."""
    panels = []
    for row, report in features["models"].items():
        saved = store.read_npz(layout.feature_reconstructions(row))
        victims = saved["victims"][:n_show]
        rows = [[private_tile(private, int(v), f"member {int(v)}") for v in victims]]
        for entry in report["scales"]:
            scale = entry["scale"]
            reconstructions = saved[f"reconstructions_{scale}"][:n_show]
            rows.append(
                [
                    Tile(image_uri(image), f"from features, noise scale {scale:g}")
                    for image in reconstructions
                ]
            )
        panels.append(
            Panel(
                title=f"Feature inversion of {row}",
                note="top row: the members whose features the attacker saw; below: the "
                "decoder's reconstructions, one row per noise scale (0 first)",
                rows=rows,
            )
        )
    return panels

"""Images for the report: released samples, released images beside their nearest private members,
the records attacks expose most, and reconstructions. Everything is read from the run directory;
private images come through a `PrivateImages` lookup, so a redacted report never touches them and
the run stage can record which ones the report shows (saved as exhibits.npz for re-rendering)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit.core import layout
from audit.core.layout import row_of
from audit.core.store import RunDir
from audit.core.transforms import IDENTITY, Transform, apply_uint8


@dataclass(frozen=True)
class Tile:
    """One image with its caption; uri None means a private image not shown (redacted)."""

    uri: str | None
    caption: str
    private: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    note: str
    rows: list[list[Tile]] = field(default_factory=list)
    grid_uri: str | None = None  # one picture instead of tiles (sample grids)


class PrivateImages:
    """Private images by dataset index: from the loaded dataset (the run) or from exhibits.npz
    (re-rendering); None everywhere when redacted. Records what was asked for."""

    def __init__(self, lookup: Callable[[int], np.ndarray | None] | None) -> None:
        self._lookup = lookup
        self.used: set[int] = set()

    @property
    def redacted(self) -> bool:
        return self._lookup is None

    def __call__(self, index: int) -> np.ndarray | None:
        if self._lookup is None:
            return None
        self.used.add(int(index))
        return self._lookup(int(index))

    @classmethod
    def from_exhibits(cls, store: RunDir) -> PrivateImages:
        if not store.path(layout.EXHIBITS).exists():
            return cls(None)
        saved = store.read_npz(layout.EXHIBITS)
        position = {int(i): n for n, i in enumerate(saved["index"])}
        images = saved["images"]
        return cls(lambda i: images[position[i]] if i in position else None)


def image_grid(rows: list[np.ndarray], *, scale: int = 3, pad: int = 2) -> np.ndarray:
    """Stack rows of uint8 NHWC images into one RGB picture (white padding, nearest upscaling)."""
    n_cols = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    cell_h, cell_w = h * scale + pad, w * scale + pad
    canvas = np.full((len(rows) * cell_h + pad, n_cols * cell_w + pad, 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
            big = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
            y, x = pad + i * cell_h, pad + j * cell_w
            canvas[y : y + h * scale, x : x + w * scale] = big
    return canvas


def png_data_uri(picture: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_uri(image: np.ndarray) -> str:
    """One uint8 HWC image at its own size (the page scales it up without smoothing)."""
    return png_data_uri(np.ascontiguousarray(image[:, :, 0] if image.shape[2] == 1 else image))


def private_tile(
    private: PrivateImages, index: int, caption: str, move: Transform = IDENTITY
) -> Tile:
    """A private image (as the transformation moves it), or a redacted tile."""
    image = private(index)
    if image is not None and not move.is_identity:
        image = apply_uint8(image[None], move)[0]
    return Tile(image_uri(image) if image is not None else None, caption, private=True)


def class_samples(images: np.ndarray, labels: np.ndarray, per_class: int) -> list[np.ndarray]:
    """Up to per_class images of each class, one row per class slot (columns are classes)."""
    classes = np.unique(labels)
    picks = [np.flatnonzero(labels == c)[:per_class] for c in classes]
    return [
        images[[p[i] for p in picks if i < len(p)]]
        for i in range(per_class)
        if any(i < len(p) for p in picks)
    ]


def sample_panels(store: RunDir, releases: list[dict[str, Any]]) -> list[Panel]:
    panels = []
    for release in releases:
        synthetic = store.read_npz(release["path"])
        grid = image_grid(class_samples(synthetic["images"], synthetic["labels"], 3))
        panels.append(
            Panel(
                title=f"{release['generator']} K={release['k']}",
                note="released images, one column per class, three per class",
                grid_uri=png_data_uri(grid),
            )
        )
    return panels


def nearest_panels(
    store: RunDir,
    releases: list[dict[str, Any]],
    members: np.ndarray,
    classes: list[str],
    private: PrivateImages,
    n_show: int = 8,
) -> list[Panel]:
    """Per release: the n_show released images most similar to a member (SSIM), each beside its
    nearest member by SSIM, its nearest by HaarPSI and the next two by SSIM, with the scores."""
    panels = []
    for release in releases:
        name = row_of(release)
        synthetic = store.read_npz(release["path"])
        privacy = store.read_npz(layout.privacy_scores(name))
        transforms = _transforms(store)
        worst = np.argsort(-privacy["ssim_values"], kind="stable")[:n_show]
        rows = []
        for i in worst:
            label = classes[int(synthetic["labels"][i])]
            tiles = [Tile(image_uri(synthetic["images"][i]), f"released #{i} (class {label})")]
            top_ssim = privacy["ssim_topk_member"][i]
            top_values = privacy["ssim_topk_values"][i]
            top_moves = [transforms[int(t)] for t in privacy["ssim_topk_transform"][i]]
            tiles.append(
                private_tile(
                    private,
                    int(members[top_ssim[0]]),
                    f"nearest by SSIM: {top_values[0]:.3f} (record {int(members[top_ssim[0]])}"
                    f"{_moved(top_moves[0])})",
                    top_moves[0],
                )
            )
            haar = int(privacy["haarpsi_member"][i])
            haar_move = transforms[int(privacy["haarpsi_transform"][i])]
            tiles.append(
                private_tile(
                    private,
                    int(members[haar]),
                    f"nearest by HaarPSI: {privacy['haarpsi_values'][i]:.3f} "
                    f"(record {int(members[haar])}{_moved(haar_move)})",
                    haar_move,
                )
            )
            for rank in range(1, len(top_ssim)):
                record = int(members[top_ssim[rank]])
                tiles.append(
                    private_tile(
                        private,
                        record,
                        f"SSIM #{rank + 1}: {top_values[rank]:.3f} ({record}"
                        f"{_moved(top_moves[rank])})",
                        top_moves[rank],
                    )
                )
            rows.append(tiles)
        panels.append(
            Panel(
                title=f"{release['generator']} K={release['k']}",
                note=f"the {len(worst)} released images most similar to a private member, "
                "highest SSIM first; record = index in the dataset; each member as mirrored or "
                "shifted to match (the transformation in brackets)",
                rows=rows,
            )
        )
    return panels


def _moved(move: Transform) -> str:
    return "" if move.is_identity else f", {move.name}"


def suspected(privacy: dict[str, np.ndarray]) -> np.ndarray:
    """Positions of the released images that are exact copies or stand out as copies by either
    metric (audit/core/holdout.py), most like a copy first (smallest stand-out ratio)."""
    flagged = np.zeros(len(privacy["ssim_values"]), bool)
    for metric in ("ssim", "haarpsi"):
        if f"{metric}_stands_out" in privacy:
            flagged |= privacy[f"{metric}_stands_out"].astype(bool)
    flagged[privacy["exact_copy_released"].astype(np.int64)] = True
    positions = np.flatnonzero(flagged)
    ratio = privacy.get("ssim_ratio", privacy["ssim_values"] * 0)[positions]
    return positions[np.argsort(ratio, kind="stable")]


def copy_panels(
    store: RunDir,
    releases: list[dict[str, Any]],
    classes: list[str],
    private: PrivateImages,
    n_show: int = 16,
) -> list[Panel]:
    """Per release with suspected copies (exact copies, or images standing out as copies by
    either metric): each beside its nearest member as the transformation found shows it, and
    beside the nearest held-out record for comparison."""
    transforms = _transforms(store)
    panels = []
    for release in releases:
        name = row_of(release)
        privacy = store.read_npz(layout.privacy_scores(name))
        flagged = suspected(privacy)
        if not len(flagged):
            continue
        synthetic = store.read_npz(release["path"])
        exact = dict(
            zip(
                privacy["exact_copy_released"].tolist(),
                privacy["exact_copy_transform"].tolist(),
                strict=True,
            )
        )
        rows = []
        for position in flagged[:n_show].tolist():
            label = classes[int(synthetic["labels"][position])]
            record = int(privacy["ssim_index"][position])
            move = transforms[int(privacy["ssim_transform"][position])]
            what = "exact copy" if position in exact else "stands out"
            held = int(privacy["ssim_holdout_index"][position])
            rows.append(
                [
                    Tile(
                        image_uri(synthetic["images"][position]),
                        f"released #{position} (class {label}): {what}",
                    ),
                    private_tile(
                        private,
                        record,
                        f"member {record}, {move.name}: SSIM "
                        f"{privacy['ssim_values'][position]:.3f}",
                        move,
                    ),
                    private_tile(
                        private,
                        held,
                        f"nearest held-out {held}: SSIM "
                        f"{privacy['ssim_holdout_values'][position]:.3f} (ratio "
                        f"{privacy['ssim_ratio'][position]:.2f})",
                    ),
                ]
            )
        shown = f"; the first {n_show} shown" if len(flagged) > n_show else ""
        panels.append(
            Panel(
                title=f"Suspected copies in {name}: {len(flagged)} ({len(exact)} exact)",
                note="released images within +-2 grey levels of a (mirrored or shifted) member "
                "or nearer one, relative to their nearest held-out record, than any record never "
                "used is; each beside that member as transformed to match and beside its "
                "nearest held-out record (ratio: distance to the member / to the held-out "
                f"record){shown}",
                rows=rows,
            )
        )
    return panels


def _transforms(store: RunDir) -> list[Transform]:
    names = store.read_json(layout.PRIVACY).get("transforms", ["identity"])
    return [Transform.from_name(n) for n in names]


def exposed_panels(
    store: RunDir,
    attacks: dict[str, Any],
    private: PrivateImages,
    n_show: int = 8,
) -> list[Panel]:
    """Per attack family: under its strongest attack (highest AUC over rows), the members with
    the highest membership scores, each with the share of non-members it outscores."""
    panels = []
    for family, title in (("mia_release", "released images"), ("mia_model", "models")):
        if family not in attacks:
            continue
        diagnostics = set(attacks[family].get("diagnostics", []))
        best = max(
            (
                (metrics["auc"], row, attack)
                for row, per_attack in attacks[family]["attacks"].items()
                for attack, metrics in per_attack.items()
                if attack not in diagnostics
            ),
            default=None,
        )
        if best is None:
            continue
        auc, row, attack = best
        saved = store.read_npz(layout.mia_scores(family, row))
        scores, is_member = saved[f"score_{attack}"], saved["is_member"].astype(bool)
        candidates = saved["candidates"]
        nonmember_scores = np.sort(scores[~is_member])
        member_positions = np.flatnonzero(is_member)
        top = member_positions[np.argsort(-scores[member_positions], kind="stable")[:n_show]]
        tiles = []
        for position in top:
            record = int(candidates[position])
            beaten = np.searchsorted(nonmember_scores, scores[position], side="left")
            share = beaten / max(1, len(nonmember_scores))
            tiles.append(
                private_tile(
                    private,
                    record,
                    f"record {record}: outscores {share:.1%} of non-members",
                )
            )
        panels.append(
            Panel(
                title=f"Attacks on the {title}: {attack} on {row} (AUC {auc:.3f})",
                note="the members this attack finds most member-like",
                rows=[tiles],
            )
        )
    return panels

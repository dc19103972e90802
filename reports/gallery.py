"""Image grids for the report: samples of each release beside their nearest private members."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

from audit.data import ImageDataset
from audit.store import RunDir, row_name


@dataclass(frozen=True)
class GalleryEntry:
    title: str
    caption: str
    png_data_uri: str


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


def class_samples(images: np.ndarray, labels: np.ndarray, per_class: int) -> list[np.ndarray]:
    """Up to per_class images of each class, one row per class slot (columns are classes)."""
    classes = np.unique(labels)
    picks = [np.flatnonzero(labels == c)[:per_class] for c in classes]
    return [
        images[[p[i] for p in picks if i < len(p)]]
        for i in range(per_class)
        if any(i < len(p) for p in picks)
    ]


def build_gallery(
    store: RunDir, data: ImageDataset, *, redact_private: bool, n_show: int = 10
) -> list[GalleryEntry]:
    """Per release: samples of each class, then the n_show released images closest to a member
    (by SSIM) and, unless redacted, their top-k nearest members underneath."""
    members = data.images[store.read_npz("split.npz")["members"]]
    entries = []
    for release in store.read_json("generate.json")["releases"]:
        name = row_name(release["generator"], release["k"])
        title = f"{release['generator']} K={release['k']}"
        synthetic = store.read_npz(release["path"])
        images = synthetic["images"]
        entries.append(
            GalleryEntry(
                f"{title}: samples",
                "released images, one column per class",
                png_data_uri(image_grid(class_samples(images, synthetic["labels"], 3))),
            )
        )
        privacy = store.read_npz(f"privacy/{name}.npz")
        worst = np.argsort(-privacy["ssim_values"], kind="stable")[:n_show]
        rows = [images[worst]]
        caption = "top row: the released images most similar to a member (SSIM, highest first)"
        if not redact_private:
            nearest = privacy["ssim_topk_member"][worst]  # (n_show, k), best first
            rows.extend(members[nearest[:, j]] for j in range(nearest.shape[1]))
            caption += (
                f"; rows below: their {nearest.shape[1]} nearest private members, nearest first"
            )
        scores = ", ".join(f"{v:.2f}" for v in privacy["ssim_values"][worst])
        entries.append(
            GalleryEntry(
                f"{title}: most member-like",
                f"{caption}. SSIM: {scores}",
                png_data_uri(image_grid(rows)),
            )
        )
    return entries

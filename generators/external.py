"""An existing synthetic set to audit (`audit run --synthetic PATH`), as the "external" generator.

PATH is an .npz with `images` (uint8, N x H x W x C) and `labels` (integers in [0, classes)), or a
folder PATH/<class name>/* whose class names are the private dataset's. The set must match the
private images' size and channels: it is audited exactly as it would be released, never resized.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from audit.core.data import IMAGE_EXTENSIONS, read_image
from audit.core.errors import AuditError
from generators.base import GenerationRequest, GeneratorPlugin, SetKey, SyntheticSet


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("images", "labels") if key not in data.files]
            if missing:
                raise AuditError(
                    f"--synthetic {path} lacks {' and '.join(missing)} (has: "
                    f"{', '.join(data.files) or 'nothing'})"
                )
            return data["images"], data["labels"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise AuditError(f"--synthetic {path} is not a readable .npz: {exc}") from exc


def _read_folder(path: Path, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    folders = sorted(d for d in path.iterdir() if d.is_dir())
    unknown = [d.name for d in folders if d.name not in classes]
    if unknown:
        raise AuditError(
            f"--synthetic {path} has class folders not in the dataset: {', '.join(unknown)} "
            f"(expected some of: {', '.join(classes)})"
        )
    files = [
        (f, classes.index(d.name))
        for d in folders
        for f in sorted(d.iterdir())
        if f.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not files:
        raise AuditError(f"--synthetic {path} holds no images in <class>/ folders")
    arrays = [read_image(f) for f, _ in files]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first = files[0][0]
        odd = next(f for (f, _), a in zip(files, arrays, strict=True) if a.shape != arrays[0].shape)
        raise AuditError(f"--synthetic image {odd} differs in size from {first}")
    return np.stack(arrays), np.asarray([label for _, label in files], dtype=np.int64)


def load_synthetic(
    path: str, *, classes: tuple[str, ...], channels: int, image_size: int
) -> SyntheticSet:
    """Read and validate an external synthetic set against the private dataset's shape.

    Args:
        path: an .npz with `images` and `labels`, or a folder of <class name>/ image folders.
        classes: the private dataset's class names in label order; a folder's class names
            must be among them.
        channels: the private images' channels.
        image_size: the private images' side in pixels.

    Returns:
        images (N, image_size, image_size, channels) uint8 (contiguous), labels (N,) int64 in
        [0, len(classes)), empty info.

    Raises:
        AuditError: path missing or unreadable, an .npz without images or labels, unknown class
            folders or no images in them, images of unequal size, images not uint8 NHWC, an
            empty set, channels or size unlike the private images', labels not N integers in
            [0, len(classes)).
    """
    source = Path(path)
    if source.is_dir():
        images, labels = _read_folder(source, classes)
    elif source.is_file():
        images, labels = _read_npz(source)
    else:
        raise AuditError(f"--synthetic {path} does not exist")
    if images.dtype != np.uint8:
        raise AuditError(f"--synthetic images must be uint8, got {images.dtype}")
    if images.ndim != 4:
        raise AuditError(
            f"--synthetic images must be N x H x W x C, got shape {tuple(images.shape)}"
        )
    if len(images) == 0:
        raise AuditError(f"--synthetic {path} holds an empty set")
    n, h, w, c = images.shape
    if c != channels:
        raise AuditError(f"--synthetic images have {c} channels, the private images {channels}")
    if (h, w) != (image_size, image_size):
        raise AuditError(
            f"--synthetic images are {h}x{w}, the private images {image_size}x{image_size}"
        )
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise AuditError(
            f"--synthetic labels must be {n} integers, got {labels.dtype} of shape {labels.shape}"
        )
    if labels.min() < 0 or labels.max() >= len(classes):
        raise AuditError(
            f"--synthetic labels must lie in [0, {len(classes) - 1}], "
            f"got {labels.min()}..{labels.max()}"
        )
    return SyntheticSet(
        images=np.ascontiguousarray(images), labels=labels.astype(np.int64), info={}
    )


class ExternalSet:
    name = "external"

    def __init__(self, path: str | None) -> None:
        if not path:
            raise AuditError("the external generator needs --synthetic PATH")
        self.path = path

    def generate(self, request: GenerationRequest) -> dict[SetKey, SyntheticSet]:
        """The set at --synthetic PATH, checked against the request's classes and image shape.

        Args:
            request: only its classes, channels and image_size are read.

        Returns:
            {None: the set}, as `load_synthetic` returns it.

        Raises:
            AuditError: as `load_synthetic`, the set unreadable or unlike the private data.
        """
        synthetic = load_synthetic(
            self.path,
            classes=request.classes,
            channels=request.channels,
            image_size=request.image_size,
        )
        return {None: synthetic}


PLUGIN = GeneratorPlugin(
    "external",
    axis=None,
    build=lambda config: ExternalSet(config.synthetic),
    settings=("synthetic",),
    reproducible=False,
    summary="an existing set: --synthetic PATH chooses it",
)

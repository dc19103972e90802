"""Datasets as uint8 NHWC arrays in canonical order, and the seeded member/non-member/test split."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from audit.core.errors import AuditError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageDataset:
    """All images of a dataset in its canonical order (train part first, then test part)."""

    name: str
    images: np.ndarray  # uint8, (N, H, W, C)
    labels: np.ndarray  # int64, (N,)
    classes: tuple[str, ...]
    n_train: int | None  # size of the dataset's own train part; None: it has no own test split

    @property
    def channels(self) -> int:
        """Image channels, C of the (N, H, W, C) images.

        Returns:
            The channel count: 1 for grey images, 3 for RGB.
        """
        return int(self.images.shape[3])

    @property
    def image_size(self) -> int:
        """Image height in pixels (the side, for the square images the suite requires).

        Returns:
            H of the (N, H, W, C) images, in pixels.
        """
        return int(self.images.shape[1])


@dataclass(frozen=True)
class Split:
    """Index arrays into the dataset's canonical order."""

    members: np.ndarray  # the private set the target model is trained on
    nonmembers: np.ndarray  # private records from the same distribution, never trained on
    test: np.ndarray  # utility evaluation


@dataclass(frozen=True)
class DatasetSpec:
    load: Callable[[str | None, bool], ImageDataset]
    hflip: bool  # whether mirrored images are still valid members of their class
    needs_root: bool


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of uint8 NHWC images to size x size.

    Args:
        images: (N, H, W, C) uint8, pixels in [0, 255].
        size: the output side, in pixels.

    Returns:
        (N, size, size, C) uint8, pixels rounded and clamped to [0, 255]; `images` itself when
        it already is size x size.
    """
    if images.shape[1] == size and images.shape[2] == size:
        return images
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def load_digits(_root: str | None, _download: bool) -> ImageDataset:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), grey levels 0..16 mapped onto 0..255.

    Args:
        _root: ignored (the data ships with scikit-learn).
        _download: ignored.

    Returns:
        The dataset: (1797, 8, 8, 1) uint8 images, no own test part (n_train None).
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    # 17 grey levels (0..16) mapped onto 0..255
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    classes = tuple(str(c) for c in bunch.target_names)
    return ImageDataset("digits", images, bunch.target.astype(np.int64), classes, None)


def load_cifar10(root: str | None, download: bool) -> ImageDataset:
    """CIFAR-10 from torchvision's files under --data-root: 50,000 train then 10,000 test images.

    Args:
        root: the --data-root directory; must not be None.
        download: fetch the files into root when they are missing.

    Returns:
        The dataset: (60000, 32, 32, 3) uint8 images, n_train 50,000.

    Raises:
        AuditError: torchvision cannot read (or download) the files.
    """
    from torchvision.datasets import CIFAR10

    assert root is not None
    try:
        train = CIFAR10(root, train=True, download=download)
        test = CIFAR10(root, train=False, download=download)
    except (RuntimeError, OSError, ValueError) as exc:
        hint = "" if download else " (pass --download to fetch it)"
        raise AuditError(f"cannot read CIFAR-10 from --data-root {root}: {exc}{hint}") from exc
    images = np.concatenate([train.data, test.data])
    labels = np.asarray(list(train.targets) + list(test.targets), dtype=np.int64)
    return ImageDataset("cifar10", images, labels, tuple(train.classes), len(train.data))


def _torchvision_mnist(kind: str, title: str) -> Callable[[str | None, bool], ImageDataset]:
    """MNIST and Fashion-MNIST (the DP generator papers' datasets) from torchvision's files under
    --data-root (ROOT/MNIST/raw/*-ubyte or ROOT/FashionMNIST/raw/...): 60k train, 10k test."""

    def load(root: str | None, download: bool) -> ImageDataset:
        import torchvision.datasets as tvd

        assert root is not None
        cls = getattr(tvd, kind)
        try:
            train = cls(root, train=True, download=download)
            test = cls(root, train=False, download=download)
        except (RuntimeError, OSError, ValueError, IndexError) as exc:
            hint = "" if download else " (pass --download to fetch it)"
            raise AuditError(f"cannot read {title} from --data-root {root}: {exc}{hint}") from exc
        images = np.concatenate([train.data.numpy(), test.data.numpy()])[..., None]
        labels = np.concatenate([train.targets.numpy(), test.targets.numpy()]).astype(np.int64)
        name = kind.lower().replace("fashionmnist", "fashion-mnist")
        return ImageDataset(name, images.astype(np.uint8), labels, tuple(train.classes), len(train))

    return load


def read_image(path: Path) -> np.ndarray:
    """One image file as a uint8 HWC array: grey modes (L, 1, I;16, I) as L, all others as RGB.

    Args:
        path: the image file.

    Returns:
        (H, W, 1) or (H, W, 3) uint8, pixels in [0, 255].

    Raises:
        AuditError: PIL cannot open or decode the file.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode = "L" if img.mode in ("L", "1", "I;16", "I") else "RGB"
            array = np.asarray(img.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise AuditError(f"cannot read image {path}: {exc}") from exc
    return array[..., None] if array.ndim == 2 else array


def _list_part(root: Path, part: str, classes: tuple[str, ...] | None) -> list[tuple[Path, int]]:
    part_dir = root / part
    if not part_dir.is_dir():
        raise AuditError(
            f"image folder {root} has no {part}/ directory (expected {part}/<class>/*)"
        )
    found = tuple(sorted(d.name for d in part_dir.iterdir() if d.is_dir()))
    if not found:
        raise AuditError(f"image folder {part_dir} has no class directories")
    if classes is not None and not set(found) <= set(classes):
        extra = sorted(set(found) - set(classes))
        raise AuditError(f"{part_dir} has classes not in train/: {', '.join(extra)}")
    names = classes if classes is not None else found
    items: list[tuple[Path, int]] = []
    for label, name in enumerate(names):
        folder = part_dir / name
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        items.extend((p, label) for p in files)
    if not items:
        raise AuditError(f"image folder {part_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return items


def load_imagefolder(root: str | None, _download: bool) -> ImageDataset:
    """root/train/<class>/* then root/test/<class>/*; labels index the sorted train class names.

    Args:
        root: the --data-root directory; must not be None.
        _download: ignored.

    Returns:
        The dataset, named after root's last component, (N, H, W, C) uint8 images, n_train the
        number of train/ images.

    Raises:
        AuditError: root is not a directory, train/ or test/ is missing, has no class
            directories or no images, test/ has a class train/ lacks, an image cannot be read,
            or images differ in size or channels.
    """
    assert root is not None
    base = Path(root)
    if not base.is_dir():
        raise AuditError(f"--data-root {root} is not a directory")
    train = _list_part(base, "train", None)
    classes = tuple(sorted(d.name for d in (base / "train").iterdir() if d.is_dir()))
    test = _list_part(base, "test", classes)
    items = train + test
    first = read_image(items[0][0])
    images = np.empty((len(items), *first.shape), dtype=np.uint8)
    for i, (path, _label) in enumerate(items):
        array = first if i == 0 else read_image(path)
        if array.shape != first.shape:
            raise AuditError(
                f"image {path} is {array.shape[1]}x{array.shape[0]}x{array.shape[2]}, expected "
                f"{first.shape[1]}x{first.shape[0]}x{first.shape[2]} like {items[0][0]}"
            )
        images[i] = array
    labels = np.asarray([label for _path, label in items], dtype=np.int64)
    return ImageDataset(base.name or "imagefolder", images, labels, classes, len(train))


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(load_digits, hflip=False, needs_root=False),
    "cifar10": DatasetSpec(load_cifar10, hflip=True, needs_root=True),
    "mnist": DatasetSpec(_torchvision_mnist("MNIST", "MNIST"), hflip=False, needs_root=True),
    "fashion-mnist": DatasetSpec(
        _torchvision_mnist("FashionMNIST", "Fashion-MNIST"), hflip=False, needs_root=True
    ),
    "imagefolder": DatasetSpec(load_imagefolder, hflip=True, needs_root=True),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The loader and properties of a named dataset.

    Args:
        name: a key of DATASETS (digits, cifar10, mnist, fashion-mnist, imagefolder).

    Returns:
        Its DatasetSpec: loader, whether mirrored images stay valid, whether it needs a root.

    Raises:
        AuditError: unknown name.
    """
    if name not in DATASETS:
        raise AuditError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(
    name: str, root: str | None, *, image_size: int | None, download: bool = False
) -> ImageDataset:
    """A named dataset in canonical order, resized when asked, checked to be square and >= 16 px.

    Args:
        name: a key of DATASETS.
        root: the --data-root directory; None for datasets that need none (digits).
        image_size: side to resize to, in pixels; None keeps the native size.
        download: let torchvision fetch missing files.

    Returns:
        The dataset, (N, S, S, C) uint8 images with S >= 16.

    Raises:
        AuditError: unknown name, a needed root missing, the loader fails, the dataset is
            empty, or its images are not square or smaller than 16 px after resizing.
    """
    spec = dataset_spec(name)
    if spec.needs_root and not root:
        raise AuditError(f"dataset {name!r} needs --data-root")
    data = spec.load(root, download)
    if len(data.images) == 0:
        raise AuditError(f"dataset {name!r} is empty")
    if image_size is not None and image_size != data.image_size:
        data = ImageDataset(
            data.name, resize(data.images, image_size), data.labels, data.classes, data.n_train
        )
    if data.image_size < 16 or data.images.shape[1] != data.images.shape[2]:
        raise AuditError(
            f"dataset {name!r} has {data.images.shape[1]}x{data.images.shape[2]} images; "
            "square images of at least 16 px are needed (use --image-size)"
        )
    return data

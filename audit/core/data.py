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
from audit.core.seeding import numpy_rng

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
        return int(self.images.shape[3])

    @property
    def image_size(self) -> int:
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
    """Bilinear (antialiased when shrinking) resize of uint8 NHWC images to size x size."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def load_digits(_root: str | None, _download: bool) -> ImageDataset:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    # 17 grey levels (0..16) mapped onto 0..255
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    classes = tuple(str(c) for c in bunch.target_names)
    return ImageDataset("digits", images, bunch.target.astype(np.int64), classes, None)


def load_cifar10(root: str | None, download: bool) -> ImageDataset:
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
    """root/train/<class>/* then root/test/<class>/*; labels index the sorted train class names."""
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
    if name not in DATASETS:
        raise AuditError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(
    name: str, root: str | None, *, image_size: int | None, download: bool = False
) -> ImageDataset:
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


def split_dataset(
    data: ImageDataset,
    *,
    seed: int,
    member_fraction: float,
    nonmember_fraction: float,
    max_members: int | None,
    max_nonmembers: int | None,
    max_test: int | None,
) -> Split:
    """Seeded split. A dataset with its own test part draws members and non-members from its train
    part (half each) and the test split from its test part; otherwise the fractions apply."""
    rng = numpy_rng(seed, "split")
    n = len(data.labels)
    if data.n_train is not None:
        pool = rng.permutation(data.n_train)
        n_members = len(pool) // 2
        members, nonmembers = pool[:n_members], pool[n_members:]
        test = data.n_train + rng.permutation(n - data.n_train)
    else:
        pool = rng.permutation(n)
        n_members = round(member_fraction * n)
        n_nonmembers = round(nonmember_fraction * n)
        members = pool[:n_members]
        nonmembers = pool[n_members : n_members + n_nonmembers]
        test = pool[n_members + n_nonmembers :]
    return _capped(data, members, nonmembers, test, (max_members, max_nonmembers, max_test))


def _capped(
    data: ImageDataset,
    members: np.ndarray,
    nonmembers: np.ndarray,
    test: np.ndarray,
    caps: tuple[int | None, int | None, int | None],
) -> Split:
    """The first cap records of each part (drawn in random order), sorted; none may be empty."""
    whole = (members, nonmembers, test)
    parts = [part[:cap] if cap else part for part, cap in zip(whole, caps, strict=True)]
    split = Split(*(np.sort(a).astype(np.int64) for a in parts))
    for part in ("members", "nonmembers", "test"):
        if len(getattr(split, part)) == 0:
            raise AuditError(f"dataset {data.name!r} is too small: the {part} split is empty")
    return split


def split_for_pretrained(
    data: ImageDataset,
    *,
    seed: int,
    max_members: int | None,
    max_nonmembers: int | None,
    max_test: int | None,
) -> Split:
    """The split for weights trained on the dataset's whole train part (a published pytorchcv
    CIFAR-10 checkpoint saw all 50,000 training images): members are that part, non-members and
    test disjoint halves of the test part, so no "non-member" was ever trained on."""
    assert data.n_train is not None
    rng = numpy_rng(seed, "split", "pretrained")
    members = rng.permutation(data.n_train)
    rest = data.n_train + rng.permutation(len(data.labels) - data.n_train)
    half = len(rest) // 2
    nonmembers, test = rest[:half], rest[half:]
    return _capped(data, members, nonmembers, test, (max_members, max_nonmembers, max_test))


def load_split_file(path: str, n_images: int) -> Split:
    """A split saved by an earlier run (split.npz) or written by hand: members, nonmembers and test
    index arrays into the dataset's canonical order, disjoint and non-empty."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as data:
            parts = {part: data[part] for part in ("members", "nonmembers", "test") if part in data}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise AuditError(f"--split {path} is not a readable .npz: {exc}") from exc
    missing = sorted({"members", "nonmembers", "test"} - set(parts))
    if missing:
        raise AuditError(f"--split {path} lacks {', '.join(missing)}")
    for part, idx in parts.items():
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or len(idx) == 0:
            raise AuditError(f"--split {path}: {part} must be a non-empty 1-d integer array")
        if idx.min() < 0 or idx.max() >= n_images:
            raise AuditError(
                f"--split {path}: {part} indexes outside the dataset's {n_images} images"
            )
    combined = np.concatenate(list(parts.values()))
    if len(np.unique(combined)) != len(combined):
        raise AuditError(f"--split {path}: members, nonmembers and test overlap or repeat")
    return Split(*(np.sort(parts[p]).astype(np.int64) for p in ("members", "nonmembers", "test")))

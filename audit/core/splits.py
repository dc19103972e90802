"""Who is a member: the seeded split of a dataset into members, held-out non-members and test
records, the split around a pretrained target, and a split read from a file."""

from __future__ import annotations

import logging

import numpy as np

from audit.core.data import ImageDataset, Split
from audit.core.errors import AuditError
from audit.core.seeding import numpy_rng

log = logging.getLogger(__name__)


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
    part (half each) and the test split from its test part; otherwise the fractions apply.

    Args:
        data: the dataset to split.
        seed: the run seed (the "split" stream is drawn from it).
        member_fraction: share of all records that become members, in (0, 1); used only for a
            dataset without its own test part.
        nonmember_fraction: the same for non-members; the rest is the test split.
        max_members: keep at most this many members (a random subset); None or 0: all.
        max_nonmembers: the same for non-members.
        max_test: the same for the test split.

    Returns:
        Sorted, disjoint int64 index arrays into the canonical order.

    Raises:
        AuditError: a part of the split is empty.
    """
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
    test disjoint halves of the test part, so no "non-member" was ever trained on.

    Args:
        data: the dataset; must have its own test part (n_train not None).
        seed: the run seed (the "split", "pretrained" stream is drawn from it).
        max_members: keep at most this many members (a random subset); None or 0: all.
        max_nonmembers: the same for non-members.
        max_test: the same for the test split.

    Returns:
        Sorted, disjoint int64 index arrays into the canonical order.

    Raises:
        AuditError: a part of the split is empty.
    """
    assert data.n_train is not None
    rng = numpy_rng(seed, "split", "pretrained")
    members = rng.permutation(data.n_train)
    rest = data.n_train + rng.permutation(len(data.labels) - data.n_train)
    half = len(rest) // 2
    nonmembers, test = rest[:half], rest[half:]
    return _capped(data, members, nonmembers, test, (max_members, max_nonmembers, max_test))


def load_split_file(path: str, n_images: int) -> Split:
    """A split saved by an earlier run (split.npz) or written by hand: members, nonmembers and test
    index arrays into the dataset's canonical order, disjoint and non-empty.

    Args:
        path: the .npz file with integer arrays "members", "nonmembers" and "test".
        n_images: the dataset's size; every index must lie in [0, n_images).

    Returns:
        The split, each part sorted and as int64.

    Raises:
        AuditError: the file is unreadable, lacks a part, a part is not a non-empty 1-d integer
            array, an index is out of range, or the parts overlap or repeat an index.
    """
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

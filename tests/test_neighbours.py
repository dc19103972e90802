"""Nearest neighbours under a generator's augmentations (audit/core/transforms.py,
audit/core/neighbours.py): moved copies are found, the exact scores equal piq's, the L2 shortlist is
exact, and the shortlist's recall against scoring every transformation is measured."""

from __future__ import annotations

import numpy as np
import piq
import pytest
import torch

from audit.core.neighbours import (
    brute_force_neighbours,
    l2_shortlist,
    paired_haarpsi,
    paired_ssim,
    transformed_neighbours,
)
from audit.core.similarity import nearest_neighbours
from audit.core.training import to_tensor
from audit.core.transforms import Transform, apply, apply_uint8, augmentations, overlap

METRICS = ("ssim", "haarpsi")


def test_augmentations_identity_first_and_named():
    found = augmentations(max_shift=2, mirror=True)
    assert len(found) == 50 and found[0].is_identity and len(set(found)) == 50
    assert augmentations(max_shift=0, mirror=False) == (Transform(),)
    assert [Transform.from_name(t.name) for t in found] == list(found)
    assert Transform(True, 1, -2).name == "mirror+shift(+1,-2)"
    with pytest.raises(ValueError):
        Transform.from_name("rotate(90)")


def test_apply_moves_and_repeats_the_edge():
    image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    right = apply_uint8(image, Transform(dx=1))[0, :, :, 0]
    assert right[:, 1:].tolist() == image[0, :, :3, 0].tolist()
    assert right[:, 0].tolist() == image[0, :, 0, 0].tolist()  # the edge repeated
    up = apply_uint8(image, Transform(dy=-1))[0, :, :, 0]
    assert up[:3].tolist() == image[0, 1:, :, 0].tolist()
    mirrored = apply_uint8(image, Transform(mirror=True))[0, :, :, 0]
    assert mirrored.tolist() == image[0, :, ::-1, 0].tolist()
    assert overlap(Transform(dy=-1, dx=2), 4, 4) == (slice(0, 3), slice(2, 4))


@pytest.mark.parametrize("channels", [1, 3])
def test_paired_scores_equal_piq(channels):
    g = torch.Generator().manual_seed(channels)
    x = torch.rand(12, channels, 32, 32, generator=g)
    y = (x + 0.2 * torch.rand(12, channels, 32, 32, generator=g)).clamp(0, 1)
    expected = piq.ssim(x, y, data_range=1.0, reduction="none").double()
    torch.testing.assert_close(paired_ssim(x, y), expected, atol=1e-5, rtol=0)
    expected = piq.haarpsi(x, y, data_range=1.0, reduction="none")
    torch.testing.assert_close(paired_haarpsi(x, y), expected, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def parts(digits):
    order = np.random.default_rng(0).permutation(len(digits.images))
    return digits.images[order[:300]], digits.images[order[300:360]]


@pytest.mark.parametrize("metric", METRICS)
def test_moved_copies_are_found(parts, metric):
    """Every reference moved by one of the transformations searched is found as its own
    nearest, with the transformation and a score of 1; no score is below the plain search's."""
    reference, query = parts
    transforms = augmentations(max_shift=2, mirror=True)
    picks = np.arange(0, 40)
    moves = np.random.default_rng(1).integers(1, len(transforms), len(picks))
    copies = np.stack(
        [
            apply_uint8(reference[p : p + 1], transforms[t])[0]
            for p, t in zip(picks, moves, strict=True)
        ]
    )
    found = transformed_neighbours(
        np.concatenate([copies, query]), reference, metric, transforms=transforms, k=2
    )
    assert (found.indices[:40, 0] == picks).all()
    assert np.allclose(found.values[:40, 0], 1.0, atol=1e-5)
    # the transformation found reproduces the copy (a different one may, e.g. on a flat edge)
    for i, (p, t) in enumerate(zip(picks, found.transforms[:40, 0], strict=True)):
        assert np.array_equal(apply_uint8(reference[p : p + 1], transforms[t])[0], copies[i])
    plain, _ = nearest_neighbours(query, reference, metric, k=1, progress=False)
    assert (found.values[40:, 0] >= plain[:, 0] - 1e-5).all()  # blocks change float sums
    assert (np.diff(found.values, axis=1) <= 0).all()


def test_l2_shortlist_is_exact(parts):
    reference, query = parts
    reference, query = reference[:80], query[:20]
    transforms = augmentations(max_shift=1, mirror=True)
    short = l2_shortlist(query, reference, transforms, 3)
    r = to_tensor(reference)
    moved = torch.stack([apply(r, t).flatten(1) for t in transforms])  # (T, R, D)
    q = to_tensor(query).flatten(1).double()
    distances = (q[None, :, None] - moved[:, None].double()).norm(dim=-1)  # (T, Q, R)
    best, kind = distances.min(dim=0)
    nearest = best.argsort(dim=1, stable=True)[:, :3]
    np.testing.assert_allclose(-short.values, best.gather(1, nearest).numpy(), atol=1e-9)
    assert (short.indices == nearest.numpy()).all()
    assert (short.transforms == kind.gather(1, nearest).numpy()).all()


def test_exclude_and_priority():
    image = np.zeros((1, 16, 16, 1), np.uint8)
    image[0, 4:12, 4:12] = 200
    reference = np.repeat(image, 4, axis=0)  # four equal references: a four-way tie
    transforms = augmentations(max_shift=1, mirror=False)
    found = transformed_neighbours(
        image, reference, "ssim", transforms=transforms, k=2, priority=np.array([3, 1, 0, 2])
    )
    assert found.indices[0].tolist() == [2, 1]  # by priority, not by position
    short = l2_shortlist(image, reference, transforms, 2, priority=np.array([3, 1, 0, 2]))
    assert sorted(short.indices[0].tolist()) == [1, 2]  # a tie at the cut goes by priority too
    skipped = transformed_neighbours(
        reference, reference, "ssim", transforms=transforms, exclude=np.arange(4)
    )
    assert (skipped.indices[:, 0] != np.arange(4)).all()


@pytest.mark.parametrize("metric", METRICS)
def test_shortlist_recall_against_every_transformation(parts, metric):
    """Held-out digits: how often the shortlist's best transformed score equals scoring every
    (reference, transformation) pair, and by how much it falls short elsewhere. Both sides of
    every privacy test use the same search, so a miss lowers both alike."""
    reference, query = parts
    reference, query = reference[:120], query[:30]
    transforms = augmentations(max_shift=2, mirror=False)
    found = transformed_neighbours(query, reference, metric, transforms=transforms)
    oracle = brute_force_neighbours(query, reference, metric, transforms=transforms)
    gap = oracle.values[:, 0] - found.values[:, 0]
    assert (gap >= -1e-5).all()  # the oracle is the best there is
    recall = float((gap <= 1e-5).mean())
    print(
        f"{metric}: shortlist equals the exhaustive best for {recall:.0%}, "
        f"worst gap {gap.max():.3f}"
    )
    assert recall >= 0.6 and gap.max() < 0.15

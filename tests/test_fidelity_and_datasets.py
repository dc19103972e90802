"""Fréchet distances (fd_eval, fid_inception) and the MNIST-family loaders, on real files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from audit.core.data import load_dataset
from audit.core.errors import AuditError
from audit.core.fidelity import frechet_distance, inception_features, load_inception


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    shifted = a + np.array([1.0, 2.0, 0.0])
    assert frechet_distance(a, shifted) == pytest.approx(5.0, rel=1e-6)  # ||mu_a - mu_b||^2
    # covariances 1 and 4 on one axis: (1 - 2)^2 = 1 from the trace term
    scaled = a * np.array([1.0, 1.0, 2.0])
    assert frechet_distance(a, scaled) == pytest.approx(1.0, rel=0.05)
    with pytest.raises(AuditError, match="at least 2"):
        frechet_distance(a[:1], a)


def test_inception_weights_from_a_local_file(tmp_path):
    from torchvision.models import inception_v3

    path = tmp_path / "inception.pt"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    model = load_inception(str(path), "cpu")
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (3, 16, 16, 1), dtype=np.uint8)
    features = inception_features(model, grey, device="cpu")
    assert features.shape == (3, 2048) and np.isfinite(features).all()
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(AuditError, match="does not fit"):
        load_inception(str(wrong), "cpu")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AuditError, match="not a readable"):
        load_inception(str(tmp_path / "corrupt.pt"), "cpu")


def _write_idx(path, array: np.ndarray) -> None:
    """The IDX format torchvision's MNIST reader parses: magic, dims, then uint8 data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize(
    ("dataset", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_mnist_family_from_torchvision_files(tmp_path, dataset, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", 30), ("t10k", 20)):
        _write_idx(raw / f"{part}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{part}-labels-idx1-ubyte", np.arange(n) % 10)
    data = load_dataset(dataset, str(tmp_path), image_size=None)
    assert data.images.shape == (50, 28, 28, 1) and data.images.dtype == np.uint8
    assert data.n_train == 30 and len(data.classes) == 10 and data.name == dataset
    assert (data.labels[:30] == np.arange(30) % 10).all()
    with pytest.raises(AuditError, match="cannot read"):
        load_dataset(dataset, str(tmp_path / "empty"), image_size=None)

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from audit.core.data import load_dataset
from audit.core.errors import AuditError
from audit.core.models import PYTORCHCV_CIFAR_MEAN, build_model
from audit.core.splits import split_dataset
from audit.core.weights import load_weights


def test_digits_is_resized_uint8(digits):
    assert digits.images.shape == (1797, 16, 16, 1)
    assert digits.images.dtype == np.uint8
    assert digits.images.max() == 255 and digits.n_train is None


def split(data, seed=0):
    return split_dataset(
        data,
        seed=seed,
        member_fraction=0.4,
        nonmember_fraction=0.3,
        max_members=None,
        max_nonmembers=None,
        max_test=None,
    )


def test_split_is_disjoint_complete_and_seeded(digits):
    a, b, c = split(digits, 0), split(digits, 0), split(digits, 1)
    parts = np.concatenate([a.members, a.nonmembers, a.test])
    assert len(np.unique(parts)) == len(parts) == len(digits.labels)
    assert len(a.members) == round(0.4 * 1797)
    assert all(
        np.array_equal(x, y)
        for x, y in zip(
            (a.members, a.nonmembers, a.test), (b.members, b.nonmembers, b.test), strict=True
        )
    )
    assert not np.array_equal(a.members, c.members)


def write_folder(root: Path, classes=("cat", "dog"), n=3, size=16, mode="RGB"):
    rng = np.random.default_rng(0)
    for part in ("train", "test"):
        for name in classes:
            (root / part / name).mkdir(parents=True)
            for i in range(n):
                shape = (size, size, 3) if mode == "RGB" else (size, size)
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
                    root / part / name / f"{i}.png"
                )


def test_imagefolder_order_and_labels(tmp_path):
    write_folder(tmp_path, classes=("zebra", "ant"))
    data = load_dataset("imagefolder", str(tmp_path), image_size=None)
    assert data.classes == ("ant", "zebra")
    assert data.n_train == 6 and data.images.shape == (12, 16, 16, 3)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1] * 2
    first = np.asarray(Image.open(tmp_path / "train" / "ant" / "0.png"))
    assert np.array_equal(data.images[0], first)
    s = split_dataset(
        data,
        seed=0,
        member_fraction=0.4,
        nonmember_fraction=0.3,
        max_members=None,
        max_nonmembers=None,
        max_test=None,
    )
    assert set(s.test) == set(range(6, 12))  # test split from the folder's test part
    assert len(s.members) == len(s.nonmembers) == 3


def test_imagefolder_reads_real_cifar_jpegs(cifar_folder):
    data = load_dataset("imagefolder", str(cifar_folder), image_size=None)
    assert data.images.shape == (150, 32, 32, 3) and data.classes == ("cat", "ship", "truck")
    assert data.n_train == 120
    assert 20 < data.images.mean() < 235


@pytest.mark.parametrize(
    "problem, match",
    [
        ("missing", "is not a directory"),
        ("no_test", "no test/"),
        ("corrupt", "cannot read image"),
        ("sizes", "expected 16x16x3"),
        ("empty", r"no images|no class"),
    ],
)
def test_imagefolder_bad_input(tmp_path, problem, match):
    root = tmp_path / "data"
    if problem != "missing":
        write_folder(root)
    if problem == "no_test":
        import shutil

        shutil.rmtree(root / "test")
    elif problem == "corrupt":
        (root / "train" / "cat" / "1.png").write_bytes(b"not a png")
    elif problem == "sizes":
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "train" / "dog" / "2.png")
    elif problem == "empty":
        for f in root.rglob("*.png"):
            f.unlink()
    with pytest.raises(AuditError, match=match):
        load_dataset("imagefolder", str(root), image_size=None)


def test_unknown_dataset_and_missing_cifar_root(tmp_path):
    with pytest.raises(AuditError, match="unknown dataset"):
        load_dataset("svhn", None, image_size=None)
    with pytest.raises(AuditError, match="CIFAR-10"):
        load_dataset("cifar10", str(tmp_path), image_size=None)


def test_cifar10_in_torchvision_format(tmp_path, monkeypatch):
    """`--dataset cifar10` on torchvision's cifar-10-batches-py pickles: train part first, then
    test; HWC uint8; torchvision's class names. torchvision checks the md5 of the official files,
    which no machine here has, so that one check is switched off: the files are read for real."""
    import pickle

    import torchvision.datasets.cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    parts = {f"data_batch_{i}": 2 for i in range(1, 6)} | {"test_batch": 3}
    written = {}
    for name, n in parts.items():
        written[name] = rng.integers(0, 256, (n, 3072), dtype=np.uint8), list(range(n))
        entry = {"data": written[name][0], "labels": written[name][1]}
        (folder / name).write_bytes(pickle.dumps(entry))
    names = [f"class{i}" for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)

    data = load_dataset("cifar10", str(tmp_path), image_size=None)
    assert data.images.shape == (13, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.n_train == 10 and data.classes == tuple(names)
    first = written["data_batch_1"][0][1].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(data.images[1], first)
    last = written["test_batch"][0][2].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(data.images[12], last)
    assert data.labels.tolist() == [0, 1] * 5 + [0, 1, 2]


def test_resnet20_adapted_to_data():
    model = build_model("resnet20_cifar10", channels=1, num_classes=7, seed=0)
    same = build_model("resnet20_cifar10", channels=1, num_classes=7, seed=0)
    pairs = zip(model.state_dict().values(), same.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)  # init drawn from the seed
    model.eval()
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 7)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 7)


def test_pytorchcv_cache_file_loads_with_cifar_normalisation(tmp_path):
    from pytorchcv.model_provider import get_model

    net = get_model("resnet20_cifar10", pretrained=False)
    path = tmp_path / "resnet20_cifar10-0597-9b0024ac.pth"
    torch.save(net.state_dict(), path)
    model = build_model("resnet20_cifar10", channels=3, num_classes=10, seed=1)
    load_weights(model, str(path), model_name="resnet20_cifar10")
    assert torch.equal(
        model.net.features.init_block.conv.weight, net.features.init_block.conv.weight
    )
    assert torch.allclose(model.mean.flatten(), torch.tensor(PYTORCHCV_CIFAR_MEAN))
    x = torch.rand(2, 3, 32, 32)
    net.eval(), model.eval()
    assert torch.allclose(model(x), net(model.normalize(x)), atol=1e-5)


def test_suite_weights_round_trip(tmp_path):
    model = build_model("resnet20_cifar10", channels=1, num_classes=10, seed=0)
    model.set_normalization(torch.tensor([0.3]), torch.tensor([0.2]))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    other = build_model("resnet20_cifar10", channels=1, num_classes=10, seed=5)
    load_weights(other, str(tmp_path / "w.pt"), model_name="resnet20_cifar10")
    assert float(other.mean) == pytest.approx(0.3)
    assert torch.equal(other.net.output.weight, model.net.output.weight)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "content, match",
    [
        ("missing", "does not exist"),
        ("garbage", "not a readable weights file"),
        ("pickle", "not a readable weights file"),
        ("misfit", "do not fit"),
        ("nan", "NaN"),
    ],
)
def test_bad_weights(tmp_path, content, match):
    path = tmp_path / "w.pt"
    model = build_model("resnet20_cifar10", channels=1, num_classes=10, seed=0)
    if content == "garbage":
        path.write_bytes(b"\x00garbage" * 10)
    elif content == "pickle":
        torch.save({"x": Evil()}, path)  # weights_only=True must refuse arbitrary objects
    elif content == "misfit":
        torch.save(
            build_model("resnet20_cifar10", channels=3, num_classes=10, seed=0).state_dict(), path
        )
    elif content == "nan":
        state = model.state_dict()
        state["net.output.weight"] = torch.full_like(state["net.output.weight"], float("nan"))
        torch.save(state, path)
    with pytest.raises(AuditError, match=match):
        load_weights(model, str(path), model_name="resnet20_cifar10")


def test_unknown_and_non_cifar_models():
    with pytest.raises(AuditError, match="not a pytorchcv CIFAR model"):
        build_model("resnet18", channels=3, num_classes=10, seed=0)
    with pytest.raises(AuditError, match="unknown --model"):
        build_model("nosuchnet_cifar10", channels=3, num_classes=10, seed=0)

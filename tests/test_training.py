import numpy as np
import pytest
import torch

from audit.core.errors import AuditError
from audit.core.models import build_model
from audit.core.sections import TrainConfig
from audit.core.training import accuracy, augment, train_classifier


def test_training_learns_digits(digits):
    model = build_model("resnet20_cifar10", channels=1, num_classes=10, seed=0)
    train_classifier(
        model,
        digits.images[:400],
        digits.labels[:400],
        TrainConfig(epochs=8, batch_size=64),
        seed=0,
        stream="t",
        device="cpu",
    )
    acc = accuracy(model, digits.images[1000:1400], digits.labels[1000:1400], device="cpu")
    assert acc > 0.6  # chance is 0.1
    assert float(model.mean) == pytest.approx(digits.images[:400].mean() / 255, abs=1e-4)


def test_augment_translates_and_flips_reproducibly():
    x = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16)
    none = TrainConfig(epochs=1, crop_padding=0, hflip=False)
    assert torch.equal(augment(x, none, torch.Generator().manual_seed(0)), x)
    cfg = TrainConfig(epochs=1, crop_padding=2, hflip=True)
    a = augment(x, cfg, torch.Generator().manual_seed(1))
    b = augment(x, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    # every output pixel is an input pixel of the same image, or zero fill
    for i in range(2):
        assert set(a[i].unique().tolist()) <= set(x[i].unique().tolist()) | {0.0}


def test_too_few_images():
    model = build_model("resnet20_cifar10", channels=1, num_classes=10, seed=0)
    with pytest.raises(AuditError, match="at least 2"):
        train_classifier(
            model,
            np.zeros((1, 16, 16, 1), np.uint8),
            np.zeros(1, np.int64),
            TrainConfig(epochs=1),
            seed=0,
            stream="t",
            device="cpu",
        )


def test_the_utility_model_never_sees_the_test_labels(digits):
    """Model selection that looks at the private test labels overstates DP utility (DPImageBench):
    the utility model is trained for a fixed recipe on the release alone and scored once, so
    scrambling every label outside the release leaves its weights identical."""
    import dataclasses

    from audit.core.config import build_config
    from audit.engine.context import retrain_on

    config = build_config(preset="smoke", utility={"epochs": 2})
    release, release_labels = digits.images[:40], digits.labels[:40]
    scrambled = dataclasses.replace(
        digits, labels=np.random.default_rng(0).permutation(digits.labels)
    )
    models = [
        retrain_on(config, data, release, release_labels, "utility-x-0")
        for data in (digits, scrambled)
    ]
    for (name, a), (_name, b) in zip(
        models[0].state_dict().items(), models[1].state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name

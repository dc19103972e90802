"""Feature inversion on a planted leak: a ResNet20 that memorised one digit per class."""

import numpy as np
import torch

from attacks.feature_inversion import feature_inversion
from attacks.penultimate import split_classifier
from attacks.release import penultimate_features
from audit.core.models import build_model
from audit.core.sections import TrainConfig
from audit.core.training import predict_logits
from tests.conftest import fit_on, one_per_class


def test_noise_free_features_reconstruct_far_better_than_noisy_ones(digits):
    members = one_per_class(digits.labels)
    rest = np.setdiff1d(np.arange(len(digits.labels)), members)
    attacker, evaluation = rest[:300], rest[300:600]
    model = build_model("resnet20_cifar10", channels=1, num_classes=10, seed=0)
    recipe = TrainConfig(epochs=100, batch_size=10, crop_padding=0)
    fit_on(model, digits, members, recipe, stream="planted")
    result = feature_inversion(
        model,
        attacker_images=digits.images[attacker],
        victims=digits.images[members],
        eval_images=digits.images[evaluation],
        eval_labels=digits.labels[evaluation],
        scales=(0.0, 3.0),
        steps=200,
        seed=0,
        stream="fi",
        device="cpu",
    )
    clean, noisy = result["scales"]
    assert clean["sigma"] == 0 and noisy["sigma"] == 3.0 * result["feature_rms"]
    assert clean["ssim_mean"] > noisy["ssim_mean"] + 0.15, (clean, noisy)
    assert clean["psnr_mean"] > noisy["psnr_mean"]
    assert clean["accuracy_on_noisy_features"] >= noisy["accuracy_on_noisy_features"]
    assert result["reconstructions"][0.0].shape == (10, 16, 16, 1)


def test_the_split_model_is_the_model(teacher, digits):
    """features -> head reproduces the classifier's logits exactly."""
    _, head = split_classifier(teacher)
    features = penultimate_features(teacher, digits.images[:8], device="cpu")
    logits = predict_logits(teacher, digits.images[:8], device="cpu")
    torch.testing.assert_close(head(features), logits, rtol=1e-5, atol=1e-5)

"""Model inversion on a planted leak.

The planted model is softmax regression memorising one digit per class: there a leak is certain
to be findable, so the attack is validated where it must succeed. (In exploratory runs not kept
as a test, a ResNet20 memorising one digit per class did not give it away to these inversions.)"""

import numpy as np
import pytest
import torch

from attacks.inversion import invert, score_reconstructions
from audit.core.sections import InversionConfig, TrainConfig
from tests.conftest import fit_on, one_per_class


@pytest.fixture(scope="module")
def linear_planted(digits):
    """Softmax regression memorising one digit per class: Fredrikson et al.'s setting, where the
    class score's gradient is the memorised image, so inversion must find it."""
    from torch import nn

    from audit.core.models import NormalizedClassifier

    members = one_per_class(digits.labels)
    rest = np.setdiff1d(np.arange(len(digits.labels)), members)
    rng = np.random.default_rng(0)
    nonmembers = np.concatenate(
        [rng.choice(rest[digits.labels[rest] == c], 20, replace=False) for c in range(10)]
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = NormalizedClassifier(nn.Sequential(nn.Flatten(), nn.Linear(256, 10)), channels=1)
    recipe = TrainConfig(epochs=200, batch_size=10, crop_padding=0, lr=0.05)
    fit_on(model, digits, members, recipe, stream="lin")
    return model, members, nonmembers


@pytest.mark.parametrize("variant", ["miface", "priors"])
def test_inversion_finds_memorised_images(digits, linear_planted, variant):
    model, members, nonmembers = linear_planted
    reconstructions = invert(
        model,
        num_classes=10,
        channels=1,
        image_size=16,
        cfg=InversionConfig(steps=200, per_class=1),
        variant=variant,
        seed=0,
        stream="t",
        device="cpu",
    )
    scores = score_reconstructions(
        reconstructions,
        digits.images[members],
        digits.labels[members],
        digits.images[nonmembers],
        digits.labels[nonmembers],
        rng=np.random.default_rng(0),
        device="cpu",
    )
    # one member per class against one same-class non-member: the member must be much closer
    gap = scores["ssim_member"] - scores["ssim_nonmember"]
    assert gap.mean() > 0.1 and (gap > 0).sum() >= 8, gap
    assert reconstructions.images.shape == (10, 16, 16, 1)

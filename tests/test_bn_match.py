import numpy as np
import pytest
import torch

from audit.core.bn import bn_statistics_distance
from audit.core.errors import AuditError
from audit.core.models import bn_layers
from audit.core.sections import BNMatchConfig
from generators.bn_match import balanced_labels, bn_match

SHAPE = (1, 16, 16)


def run(teacher, ks, *, n=20, group_size=10, seed=0, start=None, **cfg):
    config = BNMatchConfig(group_size=group_size, check_every=5, **cfg)
    return bn_match(
        teacher,
        labels=balanced_labels(n, 10),
        ks=ks,
        cfg=config,
        image_shape=SHAPE,
        seed=seed,
        device="cpu",
        progress=False,
        start=start,
    )


def test_loss_falls_and_statistics_approach_targets(teacher):
    result = run(teacher, (1, 40))
    first, last = result.history[0][1], result.history[-1][1]
    assert last < 0.5 * first
    start = bn_statistics_distance(teacher, result.snapshots[1], group_size=10, device="cpu")
    end = bn_statistics_distance(teacher, result.snapshots[40], group_size=10, device="cpu")
    assert end < 0.7 * start


def test_output_is_released_format(teacher):
    result = run(teacher, (3,))
    images = result.snapshots[3]
    assert images.dtype == np.uint8 and images.shape == (20, 16, 16, 1)
    assert np.bincount(result.labels, minlength=10).tolist() == [2] * 10


def test_snapshot_at_k_equals_fresh_run(teacher):
    long = run(teacher, (3, 8))
    fresh = run(teacher, (3,))
    assert np.array_equal(long.snapshots[3], fresh.snapshots[3])
    assert long.loss_at[3] == fresh.loss_at[3]


@pytest.mark.parametrize("groups_per_pass", [0, 1])
def test_resuming_from_a_state_equals_never_stopping(teacher, groups_per_pass):
    """What adding a K to a finished run relies on: the state saved at K=4 carries the whole
    optimisation (images and Adam's moments), so going on to K=9 gives the same bytes."""
    straight = run(teacher, (2, 4, 9), n=30, groups_per_pass=groups_per_pass)
    first = run(teacher, (4,), n=30, groups_per_pass=groups_per_pass)
    # a state taken midway is that step's, not the final one's
    assert not np.array_equal(straight.states[4].z, straight.states[9].z)
    for start in (first.states[4], straight.states[4]):
        resumed = run(teacher, (9,), n=30, groups_per_pass=groups_per_pass, start=start)
        assert np.array_equal(resumed.snapshots[9], straight.snapshots[9])
        assert resumed.loss_at[9] == straight.loss_at[9]
        for a, b in zip(
            resumed.states[9].to_arrays().values(),
            straight.states[9].to_arrays().values(),
            strict=True,
        ):
            assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="cannot resume"):
        run(teacher, (4,), n=30, start=first.states[4])


def test_groups_in_one_pass_equal_separate_runs(teacher):
    together = run(teacher, (6,), n=30, groups_per_pass=0)
    separate = run(teacher, (6,), n=30, groups_per_pass=1)
    diff = np.abs(together.snapshots[6].astype(int) - separate.snapshots[6].astype(int))
    assert diff.max() <= 1  # float summation order only: at most one quantisation step
    assert (diff > 0).mean() < 0.01
    assert together.loss_at[6] == pytest.approx(separate.loss_at[6], rel=1e-4)


def test_teacher_frozen_and_hooks_removed(teacher):
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    run(teacher, (2,))
    assert teacher.training  # mode restored
    teacher.eval()
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key  # running stats untouched
    for layer in bn_layers(teacher):
        assert not layer._forward_pre_hooks and not layer._forward_hooks
    assert all(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize(
    "variant",
    [
        {"statistics": "image", "spread": "std", "norm": "squared"},
        {"tv_weight": 0.1},
    ],
)
def test_loss_variants_run_and_fall(teacher, variant):
    result = run(teacher, (20,), **variant)
    assert result.history[-1][1] < result.history[0][1]


def test_nan_in_teacher_stops_with_error(teacher):
    import copy

    broken = copy.deepcopy(teacher)
    bn_layers(broken)[3].running_var.fill_(float("nan"))
    with pytest.raises(AuditError, match="NaN"):
        run(broken, (5,))


def test_divergence_stops_with_error(teacher):
    with pytest.raises(AuditError, match=r"diverged|NaN"):
        run(teacher, (5,), lr=1e12)


def test_no_bn_layers_is_rejected():
    from audit.core.models import build_model

    model = build_model("nin_cifar10", channels=1, num_classes=10, seed=0)
    with pytest.raises(AuditError, match="no BatchNorm"):
        run(model, (1,))


def test_nonpositive_k_rejected(teacher):
    with pytest.raises(AuditError):
        run(teacher, (0, 3))


def test_clamped_release_keeps_the_optimised_statistics(teacher):
    """Unbounded optimisation (the paper) is clipped on release; projecting onto valid pixels
    every step keeps what is released close to what was optimised."""
    free = run(teacher, (40,), n=20, group_size=20)
    clamped = run(teacher, (40,), n=20, group_size=20, clamp_pixels=True)

    def released(result):
        return bn_statistics_distance(teacher, result.snapshots[40], group_size=20, device="cpu")

    assert released(clamped) < released(free)
    # with CE excluded, the released distance is close to the optimised BN loss
    assert released(clamped) < 1.5 * clamped.loss_at[40]


def test_bn_statistics_distance_is_batched_by_whole_groups(teacher, digits):
    """The release goes through the teacher a few whole groups at a time (memory at paper
    scale), with the same distance as one pass over everything."""
    images = digits.images[:97]  # 9 groups of 10 and a group of 7
    batches: list[int] = []
    hook = teacher.net.register_forward_pre_hook(lambda _m, inputs: batches.append(len(inputs[0])))
    try:
        whole = bn_statistics_distance(
            teacher, images, group_size=10, device="cpu", images_per_pass=1000
        )
        batches.clear()
        batched = bn_statistics_distance(
            teacher, images, group_size=10, device="cpu", images_per_pass=25
        )
    finally:
        hook.remove()
    assert batches == [20, 20, 20, 20, 17]  # two whole groups per pass, the last one short
    assert batched == pytest.approx(whole, rel=1e-5)


def test_loss_at_k_is_the_loss_of_the_images_released_at_k(teacher):
    """bn_loss at K describes the images after K steps (what is released), not those before the
    K-th update."""
    from audit.core.bn import bn_inputs, frozen, group_losses, group_matrix

    result = run(teacher, (3, 6))
    config = BNMatchConfig(group_size=10, check_every=5)
    labels = torch.from_numpy(result.labels)
    averaging = group_matrix(torch.arange(20) // 10, 2)
    for k in (3, 6):
        z = torch.from_numpy(result.states[k].z)
        with frozen(teacher), bn_inputs(teacher.net) as records, torch.no_grad():
            expected = group_losses(records, teacher.net(z), labels, z, averaging, config).mean()
        assert result.loss_at[k] == pytest.approx(float(expected), rel=1e-5)
    assert result.loss_at[3] != pytest.approx(dict(result.history)[3], rel=1e-5)  # before step 3


def test_groups_per_pass_follow_the_memory_budget(teacher, caplog):
    """groups_per_pass 0 picks as many groups as the measured activations allow within the
    budget; the result equals one pass over everything (to floating-point order)."""
    from generators.bn_memory import activation_bytes_per_image, groups_within_budget

    per_image = activation_bytes_per_image(teacher, SHAPE, device="cpu")
    assert per_image > 16 * 16 * 4  # at least the input image, in float32
    budget = 2 * per_image * 10 * 2  # two groups of 10
    assert groups_within_budget(teacher, SHAPE, 10, budget, device="cpu") == 2
    assert groups_within_budget(teacher, SHAPE, 10, 1, device="cpu") == 1  # at least one
    with caplog.at_level("INFO", logger="generators.bn_match"):
        budgeted = run(teacher, (6,), n=60, groups_per_pass=0, pass_memory_budget=budget)
    assert "2 of 6 groups per pass" in caplog.text
    together = run(teacher, (6,), n=60, groups_per_pass=6)
    difference = np.abs(budgeted.snapshots[6].astype(int) - together.snapshots[6].astype(int))
    assert difference.max() <= 1

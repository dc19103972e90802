"""BN matching from a DP teacher (generators/bn_match_dp.py): its composed epsilon against
dp-accounting, the released statistics' sensitivity through a real teacher, the statistics
canaries' distribution, what the engine needed to offer it, and its input checks. The canary
audit's positive controls and honest control are in tests/test_dp_generators.py."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from audit.core.accounting import DPRecord, rdp_epsilon
from audit.core.config import build_config, typed_settings
from audit.core.errors import AuditError
from audit.core.models import bn_layers, build_model
from audit.core.training import to_tensor
from generators.base import GenerationRequest
from generators.bn_match_dp import PLUGIN, BNMatchDP, split_budget
from generators.dp_sgd import Schedule
from generators.dp_statistics import (
    clipped,
    group_norms,
    member_summaries,
    public_clip,
    release_statistics,
)
from generators.dp_teacher import dp_teacher
from generators.registry import REGISTRY

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("epsilon", [1.0, 10.0])
@pytest.mark.parametrize("share", [0.1, 0.2, 0.5])
def test_the_composed_epsilon_agrees_with_dp_accounting(epsilon: float, share: float) -> None:
    """The default digits schedule (629 members, batch 128, 60 epochs): the budget split spends
    share x epsilon on the statistics and at most epsilon in all, by our accountant and by
    Google's dp-accounting composing the same events."""
    import dp_accounting
    from dp_accounting import rdp

    schedule = Schedule.of(629, 128, 60)
    budget = split_budget(epsilon, delta=1e-5, share=share, schedule=schedule)
    phases = budget.phases(schedule.steps)
    sgd = dp_accounting.PoissonSampledDpEvent(
        schedule.sample_rate, dp_accounting.GaussianDpEvent(budget.training_noise)
    )
    oracle = (
        rdp.RdpAccountant()
        .compose(dp_accounting.SelfComposedDpEvent(sgd, schedule.steps))
        .compose(dp_accounting.GaussianDpEvent(budget.statistics_noise))
        .get_epsilon(1e-5)
    )
    ours = rdp_epsilon(list(phases), delta=1e-5)
    assert ours <= epsilon and ours == pytest.approx(epsilon, rel=0.01)
    assert oracle == pytest.approx(ours, rel=0.01)
    alone = rdp.RdpAccountant().compose(dp_accounting.GaussianDpEvent(budget.statistics_noise))
    assert alone.get_epsilon(1e-5) == pytest.approx(share * epsilon, rel=0.01)


def _teacher_and_members(n: int = 48) -> tuple[torch.nn.Module, torch.Tensor]:
    from audit.core.data import load_dataset

    data = load_dataset("digits", None, image_size=16)
    model = build_model("resnet20_cifar10", channels=1, num_classes=10, seed=0, image_size=16)
    return dp_teacher(model).eval(), to_tensor(data.images[:n])


def _released(
    teacher: torch.nn.Module,
    x: torch.Tensor,
    *,
    clip: float,
    noise: float,
    coins: np.ndarray | None = None,
    layers: list | None = None,
):
    """release_statistics on every record of x (n = len(x)), noise from seed 0."""
    return release_statistics(
        teacher,
        group_norms(teacher) if layers is None else layers,
        x,
        records=len(x),
        clip=clip,
        noise_multiplier=noise,
        rng=np.random.default_rng(0),
        canary_coins=coins,
    )


def test_one_member_moves_the_released_sum_by_at_most_the_clip_through_a_real_teacher() -> None:
    """The sensitivity property on what the generator actually sums: members' summaries at the
    GroupNorm inputs of a real (untrained) DP ResNet20, clipped at the default public clip. A
    set without member i is summarised afresh (its own forward pass, so a summary that depended
    on the other records of its batch would show) and moves the sum by at most clip; replacing a
    member by an extreme image (all white, or noise) moves it by at most 2 clip."""
    teacher, x = _teacher_and_members()
    layers = group_norms(teacher)
    clip = public_clip(teacher, layers, (1, 16, 16), seed=0)
    assert clip == public_clip(teacher, layers, (1, 16, 16), seed=0) > 0
    assert len(layers) == 21  # ResNet20's BatchNorm layers (3 of them on shortcuts), now GroupNorm
    total = clipped(member_summaries(teacher, layers, x), clip=clip).sum(axis=0)
    for i in (0, 17, len(x) - 1):
        rest = torch.cat([x[:i], x[i + 1 :]])
        without = clipped(member_summaries(teacher, layers, rest), clip=clip).sum(axis=0)
        assert np.linalg.norm(total - without) <= clip * (1 + 1e-9)
        for extreme in (torch.ones(1, 1, 16, 16), torch.rand(1, 1, 16, 16)):
            replaced = clipped(
                member_summaries(teacher, layers, torch.cat([rest, extreme])), clip=clip
            ).sum(axis=0)
            assert np.linalg.norm(total - replaced) <= 2 * clip * (1 + 1e-9)


def test_each_layer_gets_its_own_statistics_whatever_order_the_forward_pass_runs() -> None:
    """A ResNet's shortcut normalisation runs before its block's but is registered after: each
    layer's released (noise-free) target must be the batch mean and variance of that layer's
    own input, for every layer, and for a first-N subset."""
    from audit.core.bn import bn_inputs

    teacher, x = _teacher_and_members(24)
    for layers in (group_norms(teacher), group_norms(teacher, 7)):
        bare = _released(teacher, x, clip=1e12, noise=0.0, layers=layers)
        assert list(bare.targets) == layers
        with torch.no_grad(), bn_inputs(teacher.net, layers) as records:
            teacher(x)
        for layer, act in records:
            mean, var = bare.targets[layer]
            act = act.double()
            torch.testing.assert_close(mean.double(), act.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(
                var.double(), act.var(dim=(0, 2, 3), unbiased=False), rtol=1e-3, atol=1e-3
            )


def test_the_dp_teacher_is_private_by_construction() -> None:
    """No BatchNorm is left to mix records, and the input normalisation is the public default,
    not one computed from the members."""
    teacher, _x = _teacher_and_members(2)
    assert not bn_layers(teacher) and group_norms(teacher)
    assert float(teacher.mean.flatten()[0]) == 0.5 and float(teacher.std.flatten()[0]) == 0.25


def test_the_synthesis_reads_only_the_released_statistics() -> None:
    """BN matching is post-processing: given the DP teacher and the released statistics, the
    release is made from a request that carries no private record at all."""
    teacher, x = _teacher_and_members(16)
    released = _released(teacher, x, clip=50.0, noise=1.0)
    config = build_config(preset="smoke", bn_dp={"steps": 2}, bn={"group_size": 10})
    generator = PLUGIN.build(config)
    assert isinstance(generator, BNMatchDP)
    request = GenerationRequest(
        teacher=None,  # type: ignore[arg-type]
        ks=(),
        n_images=20,
        num_classes=10,
        channels=1,
        image_size=16,
        seed=0,
        device="cpu",
    )
    record = DPRecord(1.0, 1e-5, ((3.0, 0.1, 10), (5.0, 1.0, 1)))
    labels = np.arange(20) % 10
    first = generator._release(request, teacher, released, labels, record)
    again = generator._release(request, teacher, released, labels, record)
    assert first.images.shape == (20, 16, 16, 1)
    np.testing.assert_array_equal(first.images, again.images)
    assert first.info["dp_statistics_clip"] == 50.0 and first.info["dp_steps"] == 10


def test_the_statistics_canaries_score_as_the_gaussian_mechanism() -> None:
    """Canary i's score is its coordinate over the clip after the real clipping, sum and noise:
    N(1, sigma^2) when inserted, N(0, sigma^2) when not; with no noise (the test-only fault)
    the scores are the coins. The members' part of the release does not move with the coins."""
    teacher, x = _teacher_and_members(16)
    coins = np.random.default_rng(3).random(4000) < 0.5
    released = _released(teacher, x, clip=5.0, noise=2.0, coins=coins)
    scores = released.canary_scores
    assert scores is not None and released.clip == 5.0
    assert scores[coins].mean() == pytest.approx(1.0, abs=0.15)
    assert scores[~coins].mean() == pytest.approx(0.0, abs=0.15)
    assert scores[~coins].std() == pytest.approx(2.0, rel=0.05)
    bare = _released(teacher, x, clip=5.0, noise=0.0, coins=coins)
    assert bare.canary_scores is not None
    np.testing.assert_allclose(bare.canary_scores, coins.astype(float), atol=1e-12)
    alone = _released(teacher, x, clip=5.0, noise=2.0)
    for layer, (mean, var) in alone.targets.items():
        assert torch.equal(mean, released.targets[layer][0])
        assert torch.equal(var, released.targets[layer][1])
    # the targets are one (mean, variance) per GroupNorm layer, variances never negative
    assert set(released.targets) == set(group_norms(teacher))
    assert all((var >= 0).all() for _mean, var in released.targets.values())


def test_the_registry_entry_is_all_the_engine_needed() -> None:
    """No module of the engine, the core, the attacks or the reports imports the generator or
    dispatches on its name: the registry derives its rows, keys, costs, checks, columns and
    canary reruns from the plugin. (Docstrings and column texts may mention it; bench/dp_audit.py
    names it for its positive controls.)"""
    import ast

    assert REGISTRY["bn_match_dp"] is PLUGIN
    assert PLUGIN.axis == "epsilon" and PLUGIN.reproducible and not PLUGIN.from_teacher
    uses = []
    for package in ("audit", "attacks", "reports", "generators"):
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                imported = isinstance(node, ast.ImportFrom) and (
                    node.module == "generators.bn_match_dp"
                    or (
                        node.module == "generators"
                        and any(alias.name == "bn_match_dp" for alias in node.names)
                    )
                )
                named = isinstance(node, ast.Constant) and node.value == "bn_match_dp"
                if imported or named:
                    uses.append(path.relative_to(REPO).as_posix())
    # its own two modules (the generator and its statistics' release) and its registry line
    assert sorted(set(uses)) == [
        "generators/bn_match_dp.py",
        "generators/dp_statistics.py",
        "generators/registry.py",
    ]


def test_a_model_without_batchnorm_is_a_one_line_error(tmp_path, monkeypatch) -> None:
    (tmp_path / "nobn.py").write_text(
        "from torch import nn\n"
        "def net(channels, num_classes, image_size):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(channels * image_size**2, num_classes))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = build_config(preset="smoke", model="nobn:net", generator=("bn_match_dp",))
    with pytest.raises(AuditError, match="no BatchNorm"):
        PLUGIN.check(config, 1, 16)


def test_impossible_settings_are_config_errors() -> None:
    with pytest.raises(AuditError, match="statistics share"):
        build_config(bn_dp={"statistics_share": 1.0})
    with pytest.raises(AuditError, match="statistics clip"):
        build_config(bn_dp={"statistics_clip": 0.0})
    with pytest.raises(AuditError, match="bn_match_dp's epochs"):
        build_config(bn_dp={"steps": 0})
    with pytest.raises(AuditError, match="test-only"):
        typed_settings({"bn_dp": {"actual_statistics_noise_factor": 0.0}}, "a config file")

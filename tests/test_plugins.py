"""The generator plugins' declarations hold: a plugin reads no settings section it does not
declare (its rows' keys hold only the declared ones, so an undeclared read would reuse stale
releases), the registry refuses a duplicate name, and what the engine derives from the
declarations (planned releases, costs) follows them."""

from __future__ import annotations

import dataclasses

import pytest

from audit.core.config import RunConfig, build_config
from audit.core.errors import AuditError
from audit.engine.build import plan_of
from audit.engine.costs import generation_cost
from audit.engine.spec import GENERATOR_SETTINGS, planned_releases
from generators.registry import REGISTRY, plugin, registry_of


class Guarded:
    """A run config whose undeclared generator settings cannot be read: reading one fails."""

    def __init__(self, config: RunConfig, hidden: set[str]) -> None:
        self._config, self._hidden = config, hidden

    def __getattr__(self, name: str) -> object:
        if name in self._hidden:
            raise AssertionError(f"read config.{name}, which the plugin does not declare")
        return getattr(self._config, name)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_generator_reads_only_the_sections_it_declares(name: str) -> None:
    """A generator sees the run's config once, when it is built; it keeps the sections it was
    given and never the config, so what it can read while generating is what it declared."""
    declared = plugin(name)
    config = build_config(preset="smoke", synthetic="unused.npz" if name == "external" else None)
    hidden = {f.name for f in dataclasses.fields(config)} - set(declared.settings)
    generator = declared.build(Guarded(config, hidden))  # type: ignore[arg-type]
    kept = [type(v).__name__ for v in vars(generator).values()]
    assert "RunConfig" not in kept and "Guarded" not in kept, kept


def test_the_guard_catches_an_undeclared_read() -> None:
    narrow = dataclasses.replace(plugin("dp_vae"), settings=("dp",))
    with pytest.raises(AssertionError, match=r"read config\.vae"):
        narrow.build(Guarded(build_config(preset="smoke"), {"vae"}))  # type: ignore[arg-type]


def test_every_generator_setting_is_a_config_field() -> None:
    fields = {f.name for f in dataclasses.fields(build_config(preset="smoke"))}
    assert set(GENERATOR_SETTINGS) <= fields


def test_the_registry_refuses_a_duplicate_name() -> None:
    with pytest.raises(ValueError, match="two generators are named 'bn_match'"):
        registry_of([plugin("bn_match"), dataclasses.replace(plugin("dp_vae"), name="bn_match")])


def test_an_unknown_generator_is_a_one_line_error() -> None:
    with pytest.raises(AuditError, match="unknown generator 'gan'; choose one of"):
        plugin("gan")


def test_releases_and_costs_follow_the_declarations() -> None:
    config = build_config(
        preset="smoke", generator=("bn_match", "dp_vae", "vae"), k=(2, 5), epsilon=(1.0, 10.0)
    )
    rows = [r.row for r in planned_releases(config)]
    assert rows == ["bn_match-k2", "bn_match-k5", "dp_vae-eps1", "dp_vae-eps10", "vae"]
    from audit.core.data import load_dataset

    plan = plan_of(config, load_dataset("digits", None, image_size=16))
    one = generation_cost(plan, "dp_vae")
    assert one > 0
    # one training per target epsilon: half the epsilons, half the cost
    fewer = dataclasses.replace(plan, config=dataclasses.replace(config, epsilon=(1.0,)))
    assert generation_cost(fewer, "dp_vae") == pytest.approx(one / 2)

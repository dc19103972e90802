"""Every generator the suite offers, by name: a new generator is its module and one line here."""

from __future__ import annotations

from collections.abc import Iterable

from audit.core.config import RunConfig
from audit.core.errors import AuditError
from generators import bn_match, bn_match_dp, dp2_vae, dp_vae, dpd_fvae, external, vae
from generators.base import Generator, GeneratorPlugin


def registry_of(plugins: Iterable[GeneratorPlugin]) -> dict[str, GeneratorPlugin]:
    """name -> plugin, in the order given.

    Args:
        plugins: the generator plugins, each with its own `name`.

    Returns:
        Each plugin's name -> the plugin, in the order given.

    Raises:
        ValueError: two plugins declare the same name.
    """
    registry: dict[str, GeneratorPlugin] = {}
    for plugin in plugins:
        if plugin.name in registry:
            raise ValueError(f"two generators are named {plugin.name!r}")
        registry[plugin.name] = plugin
    return registry


REGISTRY = registry_of(
    [
        bn_match.PLUGIN,
        bn_match_dp.PLUGIN,
        dp_vae.PLUGIN,
        dp2_vae.PLUGIN,
        dpd_fvae.PLUGIN,
        dpd_fvae.PUBLISHED_PLUGIN,
        vae.PLUGIN,
        external.PLUGIN,
    ]
)


def plugin(name: str) -> GeneratorPlugin:
    """The plugin of a `--generator` name.

    Args:
        name: a `--generator` name, e.g. "bn_match".

    Returns:
        That generator's plugin from REGISTRY.

    Raises:
        AuditError: no generator has that name.
    """
    if name not in REGISTRY:
        raise AuditError(f"unknown generator {name!r}; choose one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def get_generator(name: str, config: RunConfig) -> Generator:
    """The generator `name` built for this run's config.

    Args:
        name: a `--generator` name, e.g. "bn_match".
        config: the run's config; the plugin's build reads its sections.

    Returns:
        The generator, ready for `generate`.

    Raises:
        AuditError: no generator has that name, or its build rejects the config (e.g.
            "external" without --synthetic).
    """
    return plugin(name).build(config)

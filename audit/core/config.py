"""The frozen run configuration: resolved once at the CLI edge, saved with every artifact."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from audit.core.errors import AuditError
from audit.core.presets import PRESETS
from audit.core.sections import (
    BNMatchConfig,
    BNMatchDPConfig,
    DPConfig,
    FeatureConfig,
    FedConfig,
    InversionConfig,
    TrainConfig,
    VAEConfig,
    coerce,
)
from audit.core.validation import validate


@dataclass(frozen=True)
class RunConfig:
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    image_size: int | None = None  # None: the dataset's native size (digits: set by preset)
    model: str = "resnet20_cifar10"
    weights: str | None = None
    # bn_match beside a DP generator: the two ways to release synthetic images on one page
    generator: tuple[str, ...] = ("bn_match", "dp_vae")
    k: tuple[int, ...] = (200, 1000)  # BN-matching steps released at, one row each
    epsilon: tuple[float, ...] = (10.0,)  # the DP generators' targets, one row each
    vae: VAEConfig = field(default_factory=VAEConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    n_synthetic: int = 100
    out: str = ""
    device: str = "cpu"  # cpu | cuda; build_config resolves "auto" (the default there)
    # torch threads per task, in either executor (a Ray task asks for as many CPUs): float sums
    # depend on the count, so it keys results; None = torch's default (the CLI records it)
    threads: int | None = None
    seed: int = 0
    preset: str = "quick"
    # of a dataset with no own test split (digits): members and non-members equal in size, so a
    # reference model trained on half of them trains on as many records as the target
    member_fraction: float = 0.35
    nonmember_fraction: float = 0.35
    max_members: int | None = None
    max_nonmembers: int | None = None
    max_test: int | None = None
    max_reference: int = 500  # held-out non-members offered as the `real` row's release
    max_holdout: int = 5000  # non-members kept as the holdout yardstick (half of them at most)
    utility_seeds: int = 1  # retrainings per row; utility_acc is their mean
    # retrainings of the real-members baseline; None: utility_seeds. The quick preset trains it
    # once: on the 629 digit members it costs 6x a 100-image release, and its spread is small
    real_utility_seeds: int | None = None
    target: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=40))
    utility: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=40))
    bn: BNMatchConfig = field(default_factory=BNMatchConfig)
    bn_dp: BNMatchDPConfig = field(default_factory=BNMatchDPConfig)
    inversion: InversionConfig = field(default_factory=InversionConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    similarity_levels: tuple[float, ...] = (0.5, 0.7, 0.9)
    nn_k: int = 3  # nearest members kept per released image (the report shows them)
    # released images are compared with private ones shifted by up to nn_shift px along each
    # axis and, with nn_mirror, mirrored: the copies a generator's flip-and-crop augmentation
    # yields (audit/core/transforms.py); nn_mirror None: the dataset's (CIFAR yes, digits no)
    nn_shift: int = 2
    nn_mirror: bool | None = None
    mia_candidates: int = 5000  # at most this many members, and as many non-members, attacked
    eps_delta: float = 1e-5  # eps_lower is the epsilon of (epsilon, delta)-DP at this delta
    attacker_weights: str | None = None  # the release attacker's feature extractor (else trained)
    mia_refs: int = 0  # reference pipelines for LiRA/RMIA (0: single-model attacks only)
    mia_augment: bool = True  # LiRA queries each record shifted (and mirrored) too (Carlini et al.)
    canaries: int = 0  # one-run epsilon audit (attacks/tasks/canaries.py); 0 = off
    # white-box gradient canaries planted beside them in every DP-SGD training of the audit run
    gradient_canaries: int = 5000
    inception_weights: str | None = None  # torchvision inception_v3 state dict: fid_inception
    synthetic: str | None = None  # audit this existing set (generator "external") instead
    split: str | None = None  # members/non-members/test indices from a split.npz
    redact_originals: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data, the form config.json records.

        Returns:
            Every field by name, sections (target, bn, vae...) as nested dicts, tuples kept.
        """
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short hash of everything that changes results (not where they are written).

        Returns:
            12 lowercase hex characters of the SHA-256 of the fields, out and redact_originals
            left out.
        """
        payload = {k: v for k, v in self.to_dict().items() if k not in ("out", "redact_originals")}
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


SECTIONS: dict[str, type] = {
    "target": TrainConfig,
    "utility": TrainConfig,
    "bn": BNMatchConfig,
    "bn_dp": BNMatchDPConfig,
    "vae": VAEConfig,
    "dp": DPConfig,
    "fed": FedConfig,
    "inversion": InversionConfig,
    "features": FeatureConfig,
}
# settings that only tests set (see DPConfig.actual_noise_factor): a file or flag cannot
TEST_ONLY = (
    "dp.actual_noise_factor",
    "dp.fault_skip_clipping",
    "fed.fault_swap_optimisers",
    "bn_dp.actual_statistics_noise_factor",
)


def build_config(*layers: Mapping[str, Any] | None, **settings: Any) -> RunConfig:
    """The run configuration from layers of settings, each later one overriding the earlier:
    the preset's defaults, then each layer (a config file, then the flags), then **settings.

    Every layer uses config.json's names: top-level fields, and sections (bn, vae, dp, fed,
    target, utility, inversion, features) as nested mappings whose keys override one by one. A
    value of None means "not given". The preset is the last one any layer names ("quick" if
    none). target.hflip and utility.hflip default to the dataset's (flips are valid for CIFAR,
    not for digits); image_size on digits to the preset's digits_image_size.

    Args:
        layers: mappings of settings in config.json's names, lowest priority first; None
            layers are skipped.
        settings: the highest-priority settings, in the same names.

    Returns:
        The validated configuration, k, epsilon and similarity_levels sorted and deduplicated,
        device resolved and threads recorded.

    Raises:
        AuditError: unknown preset or dataset, an unknown or mistyped setting, --k or
            --generator combined with --synthetic, an unavailable device, or a value `validate`
            rejects.
    """
    given = merge_settings(*layers, settings)
    preset = given.get("preset") or "quick"
    if preset not in PRESETS:
        raise AuditError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    base = {k: v for k, v in PRESETS[preset].items() if k != "digits_image_size"}
    fields = merge_settings(base, given)
    fields["preset"] = preset
    dataset = fields.get("dataset", "digits")
    if fields.get("image_size") is None and dataset == "digits":
        fields["image_size"] = PRESETS[preset]["digits_image_size"]
    for name in ("target", "utility"):
        if fields.get(name, {}).get("hflip") is None:  # mirrored images stay valid for CIFAR
            from audit.core.data import dataset_spec

            fields.setdefault(name, {})["hflip"] = dataset_spec(dataset).hflip
    if fields.get("nn_mirror") is None:  # a mirrored digit is no digit; a mirrored car is a car
        from audit.core.data import dataset_spec

        fields["nn_mirror"] = dataset_spec(dataset).hflip
    if fields.get("synthetic"):
        # a recorded config of such a run repeats generator ["external"] and the preset's k:
        # only other values conflict
        if "k" in given and tuple(given["k"]) != tuple(PRESETS[preset]["k"]):
            raise AuditError("--k sets BN-matching steps; an external set (--synthetic) has none")
        if "generator" in given and tuple(given["generator"]) != ("external",):
            raise AuditError(
                "--synthetic audits an existing set; it cannot be combined with --generator"
            )
        fields["generator"] = ("external",)
    if fields.get("threads") is None:  # recorded: results depend on it
        import torch

        fields["threads"] = torch.get_num_threads()
    fields["device"] = resolve_device(fields.get("device", "auto"))  # recorded as resolved
    config = from_settings(fields)
    config = dataclasses.replace(
        config,
        k=tuple(sorted(set(config.k))),
        epsilon=tuple(sorted(set(config.epsilon))),
        similarity_levels=tuple(sorted(set(config.similarity_levels))),
    )
    validate(config)
    return config


def merge_settings(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Later layers override earlier ones, key by key inside sections; None is "not given".

    Args:
        layers: mappings of settings in config.json's names, lowest priority first; None
            layers are skipped.

    Returns:
        A new dict: top-level names with their last non-None value, each section (target, bn,
        vae...) a dict merged key by key; nothing is type-checked.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                continue
            if key in SECTIONS and isinstance(value, Mapping):
                section = {k: v for k, v in value.items() if v is not None}
                merged[key] = {**merged.get(key, {}), **section}
            else:
                merged[key] = value
    return merged


TRAINING_EPOCHS_DEFAULT = 40  # target and utility, where no preset or layer sets epochs


def from_settings(fields: Mapping[str, Any]) -> RunConfig:
    """A RunConfig from config.json-shaped settings, each checked against its field's type (the
    test-only ones included: build_config is what tests call).

    Args:
        fields: top-level settings and section mappings (bn, vae, dp, fed, target, utility,
            inversion, features); target and utility epochs default to 40.

    Returns:
        The RunConfig; fields not given keep their dataclass defaults. Not validated.

    Raises:
        AuditError: an unknown setting, a value of the wrong type, or a section that is not a
            mapping.
    """
    typed = typed_settings(fields, "settings", test_only_allowed=True)
    values: dict[str, Any] = {}
    for key, value in typed.items():
        if key in SECTIONS:
            if key in ("target", "utility"):
                value.setdefault("epochs", TRAINING_EPOCHS_DEFAULT)
            value = SECTIONS[key](**value)
        values[key] = value
    return RunConfig(**values)


def typed_settings(
    settings: Mapping[str, Any], source: str, *, test_only_allowed: bool = False
) -> dict[str, Any]:
    """One layer's settings with every name and type checked against the dataclasses (lists as
    tuples, integers as floats where a float is due); an AuditError names the source and the
    first unknown setting, wrong type, or changed test-only setting.

    Args:
        settings: one layer's settings in config.json's names, sections as mappings.
        source: where they came from (a file path, "settings"), named in messages.
        test_only_allowed: let the test-only fault-injection settings (TEST_ONLY) differ from
            their defaults.

    Returns:
        The same names with coerced values; sections as dicts of coerced values, not yet
        dataclasses.

    Raises:
        AuditError: a section that is not a mapping, an unknown name, a wrong type, or a
            test-only setting changed while not allowed.
    """
    typed: dict[str, Any] = {}
    for key, value in settings.items():
        if key in SECTIONS:
            if not isinstance(value, Mapping):
                raise AuditError(f"{source}: [{key}] must be a table of settings, got {value!r}")
            typed[key] = _typed(SECTIONS[key], value, source, f"{key}.", test_only_allowed)
        else:
            typed.update(_typed(RunConfig, {key: value}, source, "", test_only_allowed))
    return typed


def _typed(
    cls: type, settings: Mapping[str, Any], source: str, prefix: str, test_only_allowed: bool
) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    known = [name for name in defaults if f"{prefix}{name}" not in TEST_ONLY]
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if key not in hints:
            raise AuditError(
                f"{source}: unknown setting {name!r}; known: {', '.join(prefix + k for k in known)}"
            )
        out[key] = coerce(hints[key], value, f"{source}: {name}")
        # test-only fault injection: a file or the API may repeat its default, as a recorded
        # config.json does, but not change it
        if name in TEST_ONLY and not test_only_allowed and out[key] != defaults[key]:
            raise AuditError(
                f"{source}: {name} is test-only fault injection; only its default "
                f"{defaults[key]!r} may be given"
            )
    return out


def load_settings(path: str) -> dict[str, Any]:
    """A TOML config file's settings (config.json's names; sections as [bn], [target]...);
    AuditError on a missing or malformed file. Unknown names fail in build_config.

    Args:
        path: the TOML config file.

    Returns:
        The settings as parsed (lists stay lists), after their names and types were checked.

    Raises:
        AuditError: the file cannot be read, is not valid TOML, or holds an unknown or
            mistyped setting or a changed test-only one.
    """
    try:
        with open(path, "rb") as handle:
            settings = tomllib.load(handle)
    except OSError as exc:
        raise AuditError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AuditError(f"config file {path} is not valid TOML: {exc}") from None
    typed_settings(settings, path)  # names and types checked now, so errors name the file
    return settings


def resolve_device(device: str) -> str:
    """auto -> cuda when torch sees a GPU, else cpu; a GPU asked for and missing is an error.

    Args:
        device: "auto", "cpu" or "cuda".

    Returns:
        "cpu" or "cuda".

    Raises:
        AuditError: "cuda" without a CUDA device, or any other value.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise AuditError("--device cuda was requested but torch sees no CUDA device")
    if device not in ("cpu", "cuda"):
        raise AuditError(f"--device must be auto, cpu or cuda, got {device!r}")
    return device

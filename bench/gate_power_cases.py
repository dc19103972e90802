"""The releases gate_power.py judges: planted leaks (exact, mirrored, shifted, noisy, blurred
near-copies among honest images) and honest releases (blurry, collapsed, DP samples)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter

from audit.core.config import RunConfig
from audit.core.data import ImageDataset, Split

Case = tuple[str, np.ndarray]


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Moved as a random crop of a zero-padded image moves it."""
    h, w = images.shape[1:3]
    p = max(abs(dy), abs(dx))
    padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    return padded[:, p - dy : p - dy + h, p - dx : p - dx + w]


def moved(images: np.ndarray, rng: np.random.Generator, px: int) -> np.ndarray:
    """Each image shifted by px along a random axis, in a random direction."""
    out = np.empty_like(images)
    for i, image in enumerate(images):
        step = int(rng.choice([-px, px]))
        dy, dx = (step, 0) if rng.random() < 0.5 else (0, step)
        out[i] = shifted(image[None], dy, dx)[0]
    return out


def noisy(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.integers(-8, 9, images.shape)
    return np.clip(images.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def blurred(images: np.ndarray) -> np.ndarray:
    return np.stack(
        [gaussian_filter(im.astype(np.float64), sigma=(1.0, 1.0, 0)) for im in images]
    ).astype(np.uint8)


def jittered(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Near-repeats: +-8 noise and a 1-px shift."""
    return noisy(moved(images, rng, 1), rng)


def planted(members: np.ndarray, honest: np.ndarray, rng: np.random.Generator) -> list[Case]:
    """Held-out images, copies at 100%, 10%, 1% of 100 and 5 in 500, blurred, collapsed and
    jittered-collapsed held-out releases."""
    cases: list[Case] = [
        ("held-out images (100)", honest[rng.choice(len(honest), 100, replace=False)]),
        ("held-out images (500)", honest[rng.choice(len(honest), 500, replace=False)]),
    ]
    for kind, copy in COPIES.items():
        for copies, size in ((100, 100), (10, 100), (1, 100), (5, 500)):
            sources = members[rng.choice(len(members), copies, replace=False)]
            rest = honest[rng.choice(len(honest), size - copies, replace=False)]
            release = np.concatenate([copy(sources, rng), rest])[rng.permutation(size)]
            label = "100%" if copies == size else f"{copies} in {size}"
            cases.append((f"{kind} copies, {label}", release))
    cases.append(("held-out, blurred (500)", blurred(honest[rng.choice(len(honest), 500, False)])))
    few = honest[rng.choice(len(honest), 5, replace=False)]
    cases.append(("held-out, collapsed: 5 images x 100", few[rng.integers(0, 5, 100)]))
    cases.append(("held-out, 5 images x 100 jittered", jittered(few[rng.integers(0, 5, 100)], rng)))
    return cases


def dp_releases(
    config: RunConfig, data: ImageDataset, split: Split, n: int, *, dp2: bool
) -> list[Case]:
    """Real DP releases (the run's recipes, trained on the members): DP-VAE at epsilon 1 and,
    with dp2, DP^2-VAE at epsilon 1 and 10."""
    from audit.core.models import build_model
    from generators.base import GenerationRequest
    from generators.registry import get_generator

    members, labels = data.images[split.members], data.labels[split.members]
    cases = []
    for name, epsilons in (("dp_vae", (1.0,)), *((("dp2_vae", (1.0, 10.0)),) if dp2 else ())):
        started = time.perf_counter()
        request = GenerationRequest(
            # the VAEs train on the records themselves; the request's teacher is unused
            teacher=build_model(
                config.model,
                channels=data.channels,
                num_classes=len(data.classes),
                seed=config.seed,
                image_size=data.image_size,
            ),
            ks=(),
            n_images=n,
            num_classes=len(data.classes),
            channels=data.channels,
            image_size=data.image_size,
            seed=config.seed,
            device="cpu",
            classes=tuple(data.classes),
            private_images=members,
            private_labels=labels,
            epsilons=epsilons,
        )
        sets = get_generator(name, config).generate(request)
        print(f"    {name} trained in {time.perf_counter() - started:.0f} s", flush=True)
        cases += [(f"{name} release, epsilon {e:g} ({n})", sets[e].images) for e in epsilons]
    return cases


COPIES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "exact": lambda x, _rng: x,
    "noisy +-8": noisy,
    "mirrored": lambda x, _rng: np.ascontiguousarray(x[:, :, ::-1]),
    "shifted 1 px": lambda x, rng: moved(x, rng, 1),
    "shifted 2 px": lambda x, rng: moved(x, rng, 2),
}

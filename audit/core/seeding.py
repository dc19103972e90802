"""Explicit, named random streams derived from the one run seed.

Each consumer (split, target init, BN noise, utility training...) gets its own stream, so adding
a stage never shifts the random numbers another stage sees.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import numpy as np
import torch


def derive_seed(seed: int, *names: str | int) -> int:
    """A 63-bit seed that depends only on the run seed and the stream's name."""
    text = ":".join([str(seed), *map(str, names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def numpy_rng(seed: int, *names: str | int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *names))


def torch_generator(seed: int, *names: str | int, device: str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, *names))
    return generator


@contextlib.contextmanager
def seeded_global_rng(seed: int, *names: str | int) -> Iterator[None]:
    """For code that only draws from torch's global RNG (pytorchcv's weight init)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *names))
        yield

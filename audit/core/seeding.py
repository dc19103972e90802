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
    """A 63-bit seed that depends only on the run seed and the stream's name.

    Args:
        seed: the run seed.
        names: the stream's name parts (e.g. "split", "pretrained"), joined with ":".

    Returns:
        An int in [0, 2**63), from the SHA-256 of "seed:name:...".
    """
    text = ":".join([str(seed), *map(str, names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def numpy_rng(seed: int, *names: str | int) -> np.random.Generator:
    """A numpy Generator on the named stream of the run seed.

    Args:
        seed: the run seed.
        names: the stream's name parts.

    Returns:
        A fresh np.random.Generator seeded with derive_seed(seed, *names).
    """
    return np.random.default_rng(derive_seed(seed, *names))


def torch_generator(seed: int, *names: str | int, device: str = "cpu") -> torch.Generator:
    """A torch Generator on the named stream of the run seed.

    Args:
        seed: the run seed.
        names: the stream's name parts.
        device: the device the generator draws on ("cpu", "cuda"...).

    Returns:
        A fresh torch.Generator seeded with derive_seed(seed, *names).
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, *names))
    return generator


@contextlib.contextmanager
def seeded_global_rng(seed: int, *names: str | int) -> Iterator[None]:
    """For code that only draws from torch's global RNG (pytorchcv's weight init).

    The global CPU RNG state is restored when the block ends; torch.manual_seed also seeds the
    CUDA RNGs, which fork_rng(devices=[]) does not restore.

    Args:
        seed: the run seed.
        names: the stream's name parts.

    Yields:
        None; inside the block torch's global CPU RNG is seeded from the named stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *names))
        yield

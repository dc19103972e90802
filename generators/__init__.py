"""Synthetic-set generators. Each registers itself in generators.base.REGISTRY by name."""

from generators.base import REGISTRY, GenerationRequest, Generator, SyntheticSet, get_generator

__all__ = ["REGISTRY", "GenerationRequest", "Generator", "SyntheticSet", "get_generator"]

"""Synthetic-set generators: the interface (base.py), one module per generator, and the
registry that lists them (registry.py)."""

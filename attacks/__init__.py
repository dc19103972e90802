"""Attacks on a release and on models trained on it (membership inference, inversion, HCR bounds).

The maths lives in this package's modules; attacks/tasks/ holds the stages' tasks, which
audit/engine/pipeline.py lists.
"""

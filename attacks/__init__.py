"""Attacks on a release and on models trained on it (membership inference, inversion, HCR bounds).

Empty until the membership-inference issue; attack stages register through
``audit.pipeline.register_stage``.
"""

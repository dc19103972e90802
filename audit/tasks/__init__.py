"""The core stages' tasks (split, target, generate, privacy, utility, fidelity, report): module-
level functions of (run, *args), so any executor can run them. audit/engine/pipeline.py lists
them."""

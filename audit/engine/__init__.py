"""The engine: the task graph built from the config, its keys, the scheduler and its executors,
and the ordered list of stages (pipeline.py)."""

"""The ground floor: configuration, data, models, training, similarity, statistics and the run
directory. Nothing here imports the rest of the project (tests/test_layers.py checks it)."""

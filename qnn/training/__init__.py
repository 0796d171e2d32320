"""The training run: options, recipes, records, data parallelism."""

"""Trainer extensions: snapshots, guards, BN statistics, model selection."""

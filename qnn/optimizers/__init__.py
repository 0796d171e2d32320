"""Optimizers and per-layer step sizes of the BinaryNet recipes."""

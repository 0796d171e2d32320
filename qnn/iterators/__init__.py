"""Iterators over array datasets, and minibatch augmentation."""

"""Quantized and binarized neural networks in Chainer: the library behind
the scripts at the repository root.

Laid out like Chainer itself: ``functions``, ``links``, ``optimizers``,
``iterators``, ``serializers``, ``training`` (with ``extensions``),
``datasets``, ``packed`` (the network as bits), ``backends`` and ``utils``.
This file imports nothing, so that :mod:`qnn.utils.environment_check` runs
before NumPy is loaded.
"""

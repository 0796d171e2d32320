"""Devices, CPU kernels and threads, and Chainer on today's NumPy."""

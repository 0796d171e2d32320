"""Chainer links of quantized networks."""

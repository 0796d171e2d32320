"""Chainer functions (FunctionNode) of quantized networks."""

"""Packed dense layers (qnn.packed.dense_kernels, through
qnn.packed.forward.sign_layer) against Chainer's float layers, on the NumPy
reference and the numba kernels."""
import numpy
import pytest

from qnn.packed import bits as packed_bits
from qnn.packed import folding
from qnn.packed import forward as packed_forward

from helpers import chainer_sign_layer, random_unit_bn, sign_layer


WIDTHS = [(784, 1000), (1000, 10), (33, 33), (1000, 1000), (10, 784)]


@pytest.mark.parametrize('n_in,n_out', WIDTHS)
@pytest.mark.parametrize('backend', ['numpy', 'numba'])
def test_xnor_layer_equals_chainer_float_layer(n_in, n_out, backend):
    rng = numpy.random.default_rng(n_in * 7 + n_out)
    x = numpy.where(rng.random((50, n_in)) < 0.5, -1.0, 1.0)
    W = rng.normal(size=(n_out, n_in))
    bn = random_unit_bn(rng, n_out, numpy.sqrt(n_in))
    bits, T = folding.fold_sign_from_signs(W, *bn)
    out = packed_forward.sign_layer(
        sign_layer('xnor', bits, T), packed_bits.pack_signs(x), backend)
    expected = chainer_sign_layer(x, W, bn)
    numpy.testing.assert_array_equal(out, expected)
    assert 0 < expected.mean() < 1


# pixels p / 255 in [0, 1], and 2 p / 255 - 1 in [-1, 1] (--input-range)
PIXEL_RANGES = [(255, 0.), (127.5, -1.)]


@pytest.mark.parametrize('n_in,n_out', WIDTHS)
@pytest.mark.parametrize('backend', ['numpy', 'numba'])
@pytest.mark.parametrize('scale,shift', PIXEL_RANGES)
def test_pixel_layer_equals_float_layer(n_in, n_out, backend, scale, shift):
    rng = numpy.random.default_rng(n_in + n_out)
    pixels = rng.integers(0, 256, size=(40, n_in)).astype(numpy.uint8)
    pixels[0] = 0  # s = 0 for every unit
    W = rng.normal(size=(n_out, n_in))
    # the pre-activation's spread, around shift * sum(w) with a shift
    bn = random_unit_bn(rng, n_out, 60 * numpy.sqrt(n_in) / scale)
    w = numpy.where(W >= 0, 1., -1.)
    bn[2][:] += shift * w.sum(axis=1)
    bits, T = folding.fold_sign_from_pixels(W, *bn, scale=scale, shift=shift)
    out = packed_forward.sign_layer(sign_layer('planes', bits, T), pixels,
                                    backend)
    # exact: float64 of the integer sums (below 2^53)
    s = pixels.astype(numpy.float64) @ w.T
    a = s / scale + shift * w.sum(axis=1)
    gamma, beta, mean, var = bn
    y = gamma * (a - mean) / numpy.sqrt(var + folding.DEFAULT_EPS) + beta
    numpy.testing.assert_array_equal(out, y >= 0)
    # Chainer's float32 layer (BLAS's order of summation) agrees but where
    # y is within float32 rounding of 0
    x = pixels / numpy.float32(scale) + numpy.float32(shift)
    chainer_out = chainer_sign_layer(x, W, bn)
    near = abs(y) < 1e-4 * (1 + abs(gamma) * (
        abs(s) / scale + abs(shift * w.sum(axis=1))))
    assert (out == chainer_out)[~near].all()
    assert near.mean() < 0.01

"""Batch normalization and sign folded into thresholds (qnn.packed.folding):
ties, gamma = 0, NaN."""
import numpy
import pytest

from qnn.packed import bits as packed_bits
from qnn.packed import folding
from qnn.packed import forward as packed_forward

from helpers import chainer_sign_layer, sign_layer


@pytest.mark.parametrize('sign', [1, -1])
def test_ties_at_the_threshold_are_plus_one(sign):
    # BN(a) = 0 exactly where a = mean: sign(0) = +1, for either sign of
    # gamma, in Chainer and in the packed layer
    n = 33
    rng = numpy.random.default_rng(0)
    x = numpy.where(rng.random((64, n)) < 0.5, -1.0, 1.0)
    W = rng.normal(size=(5, n))
    a = x @ numpy.where(W >= 0, 1., -1.).T
    mean = a[0].copy()  # image 0 sits on every unit's threshold
    bn = (numpy.full(5, 0.5 * sign), numpy.zeros(5), mean, numpy.ones(5))
    bits, T = folding.fold_sign_from_signs(W, *bn)
    out = packed_forward.sign_layer(
        sign_layer('xnor', bits, T), packed_bits.pack_signs(x), 'numba')
    assert out[0].all()
    numpy.testing.assert_array_equal(out, chainer_sign_layer(x, W, bn))
    # pixels: the all-zero image gives s = 0 = 255 * mean
    pixels = rng.integers(0, 256, size=(8, n)).astype(numpy.uint8)
    pixels[0] = 0
    bn = (numpy.full(5, 0.5 * sign), numpy.zeros(5), numpy.zeros(5),
          numpy.ones(5))
    bits, T = folding.fold_sign_from_pixels(W, *bn)
    out = packed_forward.sign_layer(sign_layer('planes', bits, T), pixels,
                                    'numba')
    assert out[0].all()


def test_gamma_zero_is_the_sign_of_beta():
    W = numpy.ones((4, 10))
    bn = (numpy.zeros(4), numpy.array([1., 0., -1e-30, -2.]), numpy.zeros(4),
          numpy.ones(4))
    for fold in (folding.fold_sign_from_signs, folding.fold_sign_from_pixels):
        bits, T = fold(W, *bn)
        kind = 'xnor' if fold is folding.fold_sign_from_signs else 'planes'
        x = numpy.zeros((3, 10), numpy.uint8)
        x[1] = 1
        x[2] = 255
        if kind == 'xnor':
            x = packed_bits.pack_bits(x > 0)
        out = packed_forward.sign_layer(sign_layer(kind, bits, T), x,
                                        'numpy')
        numpy.testing.assert_array_equal(
            out, numpy.tile([True, True, False, False], (3, 1)))


def test_nan_cannot_be_folded():
    with pytest.raises(folding.FoldingError, match='NaN'):
        folding.fold_sign_from_signs(numpy.full((2, 3), numpy.nan),
                                     *numpy.ones((4, 2)))

"""Packed binarized convolutions (qnn.packed.conv_kernels) against Chainer's
float blocks: the integer sums of the NumPy reference against Chainer's own
convolution (zero padding) and max pooling of the same +-1 values, the numba
kernels against the reference, on odd sizes and channel counts that fill no
word; the folded thresholds against Chainer's evaluation-mode batch
normalization and sign with gamma < 0, gamma = 0 and ties at the threshold."""
import numpy
import pytest

import chainer
import chainer.functions as F

from qnn.packed import bits as packed_bits
from qnn.packed import conv_kernels
from qnn.packed import convnet
from qnn.packed import folding
from qnn.packed import format as packed_format
import qst

from helpers import SHAPES, folded_layer, random_bits, random_maps


def chainer_layer(x, W, bn, pool):
    """Chainer's evaluation-mode block on +-1 or pixel values ``x``:
    sign(BN(MP(conv(x, W)))), with sign(0) = +1."""
    with chainer.using_config('train', False):
        a = F.convolution_2d(x.astype(numpy.float32),
                             W.astype(numpy.float32), pad=1)
        if pool:
            a = F.max_pooling_2d(a, 2, cover_all=True)
        y = F.fixed_batch_normalization(
            a, *[numpy.asarray(v, numpy.float32) for v in bn],
            eps=folding.DEFAULT_EPS)
        return a.array, qst.qst(y).array > 0


@pytest.mark.parametrize('shape', SHAPES)
def test_xnor_layer_is_chainers_block(shape):
    rng = numpy.random.RandomState(sum(shape[:4]))
    layer, signs, bn = folded_layer(rng, shape, first=False)
    values, words = random_maps(rng, 6, *shape[:3])
    sums, expected = chainer_layer(values, signs, bn, shape[4])
    # the reference's integer sums are Chainer's (with the unflipped
    # weights: compare where gamma >= 0), and its bits Chainer's signs
    flipped = bn[0] < 0
    reference = conv_kernels.reference_sums(layer, words)
    numpy.testing.assert_array_equal(reference[:, ~flipped],
                                     sums[:, ~flipped])
    out = conv_kernels.reference_layer(layer, words)
    bits = packed_bits.unpack_signs(out, shape[3]) > 0
    numpy.testing.assert_array_equal(bits.transpose(0, 3, 1, 2), expected)
    numpy.testing.assert_array_equal(
        conv_kernels.numba_layer(layer, words), out)


@pytest.mark.parametrize('shape', [(1, 28, 28, 16, True),
                                   (3, 9, 7, 5, False)])
def test_pixel_layer_is_chainers_block(shape):
    rng = numpy.random.RandomState(7)
    layer, signs, bn = folded_layer(rng, shape, first=True)
    C, H, W = shape[:3]
    pixels = rng.randint(0, 256, size=(5, C * H * W)).astype(numpy.uint8)
    # scale 1: the layer's input is the pixel itself, so Chainer's float32
    # sums are exact integers too
    _, expected = chainer_layer(pixels.reshape(5, C, H, W), signs, bn,
                                shape[4])
    out = conv_kernels.reference_layer(layer, pixels)
    bits = packed_bits.unpack_signs(out, shape[3]) > 0
    numpy.testing.assert_array_equal(bits.transpose(0, 3, 1, 2), expected)
    numpy.testing.assert_array_equal(
        conv_kernels.numba_layer(layer, pixels), out)


def test_border_taps_count_only_inside_the_image():
    # all +1 maps and weights: each position sums its valid taps times C
    C, H, W = 3, 4, 5
    weights = numpy.ones((1, C, 3, 3), numpy.float32)
    params = {'conv/W': weights}
    params.update({'bn/' + key: numpy.ones(1, numpy.float32)
                   for key in convnet.BN_KEYS})
    layer = convnet._conv_layer(params, 'conv', 'bn', (C, H, W), 1, False,
                                False, scale=1.)
    _, words = random_maps(numpy.random.RandomState(0), 1, C, H, W)
    words[...] = packed_bits.pack_bits(numpy.ones((1, H, W, C), bool))
    rows = numpy.array([2, 3, 3, 2])[:, None]
    columns = numpy.array([2, 3, 3, 3, 2])[None, :]
    numpy.testing.assert_array_equal(
        conv_kernels.reference_sums(layer, words)[0, 0],
        C * rows * columns)


def test_constant_channels_fold_to_always_or_never():
    rng = numpy.random.RandomState(3)
    layer, signs, bn = folded_layer(rng, (4, 5, 5, 8, True), first=False)
    zero = bn[0] == 0
    assert zero.any()
    values, words = random_maps(rng, 4, 4, 5, 5)
    bits = packed_bits.unpack_signs(
        conv_kernels.reference_layer(layer, words), 8) > 0
    for channel in numpy.flatnonzero(zero):
        assert (bits[..., channel] == (bn[1][channel] >= 0)).all()


def test_flatten_is_row_column_channel_order():
    rng = numpy.random.RandomState(1)
    for channels in (5, 64, 70):
        values, words = random_maps(rng, 2, channels, 3, 2)
        flat = conv_kernels.flatten(words, channels)
        expected = packed_bits.pack_bits(
            values.transpose(0, 2, 3, 1).reshape(2, -1) > 0)
        numpy.testing.assert_array_equal(flat, expected)


def geometry_layer(rng, kind, in_shape, channels, ksize, pad, pool):
    """A ``kind`` layer of random weights, thresholds and flips, of
    ``ksize`` x ``ksize`` taps and zero padding ``pad``."""
    C, H, W = in_shape
    conv = {'in_shape': list(in_shape), 'channels': channels, 'pool': pool,
            'ksize': ksize, 'pad': pad}
    layer = packed_format.Layer(
        'conv', kind, C * H * W, 1, 'sign',
        random_bits(numpy.random.default_rng(rng.randint(1 << 30)),
                    (channels, ksize * ksize, packed_bits.n_words(C)), C),
        conv=conv, thresholds=rng.randint(-40, 40, channels).astype(
            numpy.int32),
        flipped=rng.randint(0, 2, channels).astype(numpy.uint8))
    layer.n_out = int(numpy.prod(layer.out_shape))
    return layer


@pytest.mark.parametrize('kind, in_shape, channels, ksize, pad, pool', [
    ('conv_xnor', (6, 12, 12), 8, 5, 0, True),
    ('conv_xnor', (3, 7, 9), 5, 5, 2, True),
    ('conv_xnor', (70, 6, 5), 3, 2, 1, False),
    ('conv_xnor', (4, 5, 5), 2, 1, 0, True),
    ('conv_pixels', (1, 28, 28), 6, 5, 0, True),
    ('conv_pixels', (3, 9, 7), 4, 5, 1, True),
    ('conv_pixels', (2, 6, 6), 3, 4, 3, False)])
def test_kernel_size_and_padding(kind, in_shape, channels, ksize, pad, pool):
    # the reference's sums are Chainer's convolution (and pooling) of the
    # same values where the channel is not flipped; the numba kernels
    # equal the reference bit for bit
    rng = numpy.random.RandomState(ksize * 10 + pad)
    layer = geometry_layer(rng, kind, in_shape, channels, ksize, pad, pool)
    C, H, W = in_shape
    if kind == 'conv_pixels':
        x = rng.randint(0, 256, (4, C * H * W)).astype(numpy.uint8)
        values = x.reshape(4, C, H, W)
    else:
        values, x = random_maps(rng, 4, C, H, W)
    a = F.convolution_2d(values.astype(numpy.float32),
                         conv_kernels.weight_taps(layer).astype(
                             numpy.float32), pad=pad)
    if pool:
        a = F.max_pooling_2d(a, 2, cover_all=True)
    flipped = layer.flipped == 0
    sums = conv_kernels.reference_sums(layer, x)
    assert sums.shape[1:] == layer.out_shape
    numpy.testing.assert_array_equal(sums[:, flipped],
                                     a.array[:, flipped])
    numpy.testing.assert_array_equal(
        conv_kernels.numba_layer(layer, x),
        conv_kernels.reference_layer(layer, x))

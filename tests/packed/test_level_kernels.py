"""k-bit packed layers (qnn/packed/levels.py) against the real network
they fold: the quantizer of qst on the batch normalization of the exact
pre-activation, with gamma < 0, gamma = 0 and ties at a level boundary;
k-bit convolutions against Chainer's float64 convolution and pooling of
the same levels (odd sizes, channels that fill no word, pixels); the
fast sums against the integer reference; a trained 2-bit MLP and 2-bit
ConvNet against their Chainer models."""

import numpy
import pytest

import chainer.functions as F

from qnn.packed import bits as packed_bits
from qnn.packed import folding
from qnn.packed import format as packed_format
from qnn.packed import level_folding
from qnn.packed import level_kernels

BITS = [(2, 2), (3, 1), (1, 4), (4, 3), (1, 1)]


def quantized(W, bits):
    """The exact values of the ``bits``-bit levels qst's linear quantizer
    gives ``W`` (its float32 results are these, rounded)."""
    return -1 + 2 * level_folding.weight_levels(W, bits) / \
        packed_bits.n_levels(bits)


def level_of(y, bits):
    """The level index qst's linear quantizer gives ``y`` (float64)."""
    L = packed_bits.n_levels(bits)
    return numpy.floor((numpy.clip(y, -1, 1) + 1) * L / 2 + 0.5).astype(int)


def random_bn(rng, units, spread):
    gamma = rng.normal(size=units)
    gamma[::4] *= -1
    gamma[2::7] = 0
    beta = rng.uniform(-1.2, 1.2, size=units)
    mean = rng.uniform(-spread, spread, size=units) / 4
    var = rng.uniform(0.5, 2, size=units) * spread
    return [v.astype(numpy.float32) for v in (gamma, beta, mean, var)]


def layer_of(W, bn, weight_bits, in_bits, out_bits, **kwargs):
    planes, thresholds = level_folding.fold_levels(
        W, bn, weight_bits, out_bits, in_bits=in_bits, **kwargs)
    meta = {'weight_bits': weight_bits, 'input_bits': in_bits or 8,
            'output_bits': out_bits}
    return packed_format.Layer(
        'l', 'levels_pixels' if in_bits is None else 'levels', W.shape[1],
        W.shape[0], 'levels', planes, levels=meta, thresholds=thresholds)


@pytest.mark.parametrize('weight_bits, act_bits', BITS)
def test_hidden_layer_is_the_real_layer(weight_bits, act_bits):
    rng = numpy.random.RandomState(weight_bits * 10 + act_bits)
    n, units = 37, 29
    W = rng.normal(size=(units, n)).astype(numpy.float32)
    bn = random_bn(rng, units, n)
    # ties: a unit whose beta is a level boundary and whose mean an
    # achievable pre-activation reaches that boundary exactly
    boundary = (2 * 1 - 1) / packed_bits.n_levels(act_bits) - 1
    bn[1][1] = numpy.float32(boundary)
    layer = layer_of(W, bn, weight_bits, act_bits, act_bits)
    u = rng.randint(0, packed_bits.n_levels(act_bits) + 1, size=(50, n))
    x = -1 + 2 * u / packed_bits.n_levels(act_bits)
    a = x @ quantized(W, weight_bits).T
    bn[2][1] = numpy.float32(a[0, 1])  # the tie, on image 0
    layer = layer_of(W, bn, weight_bits, act_bits, act_bits)
    gamma, beta, mean, var = (v.astype(numpy.float64) for v in bn)
    y = gamma * (a - mean) / numpy.sqrt(var + folding.DEFAULT_EPS) + beta
    expected = level_of(y, act_bits)
    sums = level_kernels.reference_sums(layer, u)
    # the folding negates the weights of a unit with gamma < 0
    negated = numpy.where(bn[0] < 0, -1, 1)
    numpy.testing.assert_array_equal(
        sums, negated * numpy.rint(a * packed_bits.n_levels(act_bits) *
                                   packed_bits.n_levels(weight_bits)))
    numpy.testing.assert_array_equal(
        level_kernels.output_levels(sums, layer.thresholds), expected)
    numpy.testing.assert_array_equal(level_kernels.popcount_sums(layer, u),
                                     sums)
    numpy.testing.assert_array_equal(
        level_kernels.count_levels(sums, layer.thresholds), expected)
    zero = bn[0] == 0
    assert (expected[:, zero] == expected[:1, zero]).all()  # constant


@pytest.mark.parametrize('shift, scale', [(0., 255.), (-1., 127.5)])
def test_pixel_layer_is_the_real_layer(shift, scale):
    rng = numpy.random.RandomState(5)
    n, units, weight_bits, out_bits = 40, 23, 2, 3
    W = rng.normal(size=(units, n)).astype(numpy.float32)
    bn = random_bn(rng, units, n)
    layer = layer_of(W, bn, weight_bits, None, out_bits, scale=scale,
                     shift=shift)
    pixels = rng.randint(0, 256, size=(60, n))
    a = (pixels / scale + shift) @ quantized(W, weight_bits).T
    gamma, beta, mean, var = (v.astype(numpy.float64) for v in bn)
    y = gamma * (a - mean) / numpy.sqrt(var + folding.DEFAULT_EPS) + beta
    numpy.testing.assert_array_equal(
        level_kernels.output_levels(
            level_kernels.reference_sums(layer, pixels), layer.thresholds),
        level_of(y, out_bits))
    numpy.testing.assert_array_equal(
        level_kernels.popcount_sums(layer, pixels),
        level_kernels.reference_sums(layer, pixels))


@pytest.mark.parametrize('weight_bits, act_bits', BITS)
@pytest.mark.parametrize('n', [64, 130])
def test_popcount_sums_are_the_reference_over_several_words(
        weight_bits, act_bits, n):
    rng = numpy.random.RandomState(n + weight_bits)
    W = rng.normal(size=(70, n)).astype(numpy.float32)
    bn = random_bn(rng, 70, n)
    hidden = layer_of(W, bn, weight_bits, act_bits, act_bits)
    u = rng.randint(0, packed_bits.n_levels(act_bits) + 1, size=(9, n))
    numpy.testing.assert_array_equal(level_kernels.popcount_sums(hidden, u),
                                     level_kernels.reference_sums(hidden, u))
    first = layer_of(W, bn, weight_bits, None, act_bits)
    pixels = rng.randint(0, 256, size=(9, n))
    numpy.testing.assert_array_equal(
        level_kernels.popcount_sums(first, pixels),
        level_kernels.reference_sums(first, pixels))


def real_conv_levels(x, W, bn, weight_bits, out_bits, pool):
    """The level indices of the real block on real inputs ``x``
    ``(B, C, H, W)``: q(BN(MP(conv(x, q(W))))) in float64."""
    Wq = quantized(W.reshape(len(W), -1), weight_bits).reshape(W.shape)
    a = F.convolution_2d(x, Wq, pad=1).array
    if pool:
        a = F.max_pooling_2d(a, 2, cover_all=True).array
    gamma, beta, mean, var = (v.astype(numpy.float64)[None, :, None, None]
                              for v in bn)
    y = gamma * (a - mean) / numpy.sqrt(var + folding.DEFAULT_EPS) + beta
    return level_of(y, out_bits)


def conv_layer_of(W, bn, bits, shape, pool):
    weight_bits, in_bits, out_bits = bits
    planes, thresholds, flipped = level_folding.fold_conv_levels(
        W, bn, weight_bits, out_bits, in_bits=in_bits)
    layer = packed_format.Layer(
        'c', 'conv_levels' if in_bits else 'conv_levels_pixels',
        int(numpy.prod(shape)), 0, 'levels', planes,
        conv={'in_shape': list(shape), 'channels': len(W), 'pool': pool},
        levels={'weight_bits': weight_bits, 'input_bits': in_bits or 8,
                'output_bits': out_bits},
        thresholds=thresholds, flipped=flipped)
    layer.n_out = int(numpy.prod(layer.out_shape))
    return layer


@pytest.mark.parametrize('weight_bits, act_bits', [(2, 2), (1, 3), (3, 1)])
@pytest.mark.parametrize('shape, channels, pool', [
    ((3, 7, 5), 5, True), ((16, 6, 6), 8, False), ((70, 3, 4), 3, True)])
def test_conv_layer_is_the_real_layer(weight_bits, act_bits, shape,
                                      channels, pool):
    rng = numpy.random.RandomState(sum(shape) + weight_bits)
    C, H, Wd = shape
    W = rng.normal(size=(channels, C, 3, 3)).astype(numpy.float32)
    bn = random_bn(rng, channels, 9 * C)
    bn[0][:2] = -0.5, 0.5  # one flipped channel at least, one not
    layer = conv_layer_of(W, bn, (weight_bits, act_bits, act_bits), shape,
                          pool)
    assert layer.flipped.any() and not layer.flipped.all()
    u = rng.randint(0, packed_bits.n_levels(act_bits) + 1, size=(4, H, Wd, C))
    x = (-1 + 2 * u / packed_bits.n_levels(act_bits)).transpose(0, 3, 1, 2)
    expected = real_conv_levels(x, W, bn, weight_bits, act_bits, pool)
    maps = level_kernels.conv_level_maps(layer, u)
    numpy.testing.assert_array_equal(maps.transpose(0, 3, 1, 2), expected)
    # the reference, position by position, gives the same levels
    numpy.testing.assert_array_equal(
        level_kernels.reference_conv_levels(layer, u), maps)
    assert len(numpy.unique(maps)) > 1
    zero = bn[0] == 0  # gamma = 0: the level of beta everywhere
    assert (maps[..., zero] == maps[:1, :1, :1, zero]).all()


def test_pixel_conv_layer_is_the_real_layer():
    rng = numpy.random.RandomState(9)
    shape, channels = (1, 9, 7), 6
    W = rng.normal(size=(channels, 1, 3, 3)).astype(numpy.float32)
    bn = random_bn(rng, channels, 9)
    layer = conv_layer_of(W, bn, (2, None, 2), shape, True)
    pixels = rng.randint(0, 256, size=(5, 63))
    expected = real_conv_levels(pixels.reshape(5, 1, 9, 7) / 255., W, bn,
                                2, 2, True)
    maps = level_kernels.conv_level_maps(layer, pixels)
    numpy.testing.assert_array_equal(maps.transpose(0, 3, 1, 2), expected)
    numpy.testing.assert_array_equal(
        level_kernels.reference_conv_levels(layer, pixels), maps)


@pytest.mark.parametrize('weight_bits, act_bits', [(2, 2), (1, 2), (3, 1)])
@pytest.mark.parametrize('shape, channels, pool', [
    ((3, 7, 5), 5, True), ((16, 6, 6), 8, False), ((70, 3, 4), 3, True),
    ((1, 9, 7), 6, True), ((1, 6, 5), 4, False)])
@pytest.mark.parametrize('batch', [1, 3])
def test_numba_conv_levels_equal_the_reference(weight_bits, act_bits, shape,
                                               channels, pool, batch):
    # hidden layers and a first layer on pixels (one channel), flipped
    # channels, odd sizes pooled with cover_all
    rng = numpy.random.RandomState(sum(shape) + 10 * weight_bits + batch)
    C, H, Wd = shape
    W = rng.normal(size=(channels, C, 3, 3)).astype(numpy.float32)
    bn = random_bn(rng, channels, 9 * C)
    bn[0][:2] = -0.5, 0.5
    pixels = C == 1
    layer = conv_layer_of(W, bn, (weight_bits, None if pixels else act_bits,
                                  act_bits), shape, pool)
    if pixels:
        x = rng.randint(0, 256, size=(batch, C * H * Wd))
    else:
        x = rng.randint(0, packed_bits.n_levels(act_bits) + 1,
                        size=(batch, H, Wd, C))
    expected = level_kernels.reference_conv_levels(layer, x)
    maps = level_kernels.numba_conv_levels(layer, x.astype(numpy.uint8))
    assert maps.dtype == numpy.uint8
    numpy.testing.assert_array_equal(maps, expected)
    assert len(numpy.unique(maps)) > 1

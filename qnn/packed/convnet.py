"""A trained :class:`net.BinaryConvNet` folded into packed layers.

Each convolution becomes a ``conv_pixels`` (the first, on the 8-bit
pixels) or ``conv_xnor`` layer whose batch normalization and sign, after
the pooling if its stage ends there, are folded into one integer threshold
per channel (:mod:`qnn.packed.folding`). A channel with
:math:`\\gamma < 0` gets its weights negated, and is marked ``flipped``:
the network pools the maximum of the sums :math:`a` and the unit is
:math:`+1` iff :math:`\\max a \\le t`, that is iff
:math:`\\min(-a) \\ge -t`, so the negated sums pool with the minimum.
The dense layers become ``xnor`` layers, the first of them reading the
last feature map in (row, column, channel) order, the order the packed
feature maps are stored in (:mod:`qnn.packed.conv_kernels`); the output
layer keeps its batch normalization as an affine map.
"""
import numpy

from qnn.packed import folding
from qnn.packed import format as packed_format
from qnn.packed import level_folding
from qnn.packed.bits import PIXEL_BITS
from qnn.packed.bits import pack_bits
from qnn.packed.format import TAPS

BN_KEYS = ('gamma', 'beta', 'avg_mean', 'avg_var')


def _get(params, key, shape):
    if key not in params:
        raise folding.MissingParameter(
            'has no {}: not a snapshot of the ConvNet its config.json '
            'describes'.format(key))
    if params[key].shape != tuple(shape):
        raise folding.MissingParameter(
            '{} has shape {}, but the ConvNet its config.json describes has '
            '{}'.format(key, params[key].shape, tuple(shape)))
    return params[key]


def _bn(params, name, size):
    return [_get(params, '{}/{}'.format(name, key), (size,))
            for key in BN_KEYS]


def _conv_layer(params, name, bn, shape, channels, pool, first, scale):
    C, H, W = shape
    weights = _get(params, name + '/W', (channels, C, 3, 3)).reshape(
        channels, -1)
    if first:
        bits, thresholds = folding.fold_sign_from_pixels(
            weights, *_bn(params, bn, channels), scale=scale)
        kind = 'conv_pixels'
    else:
        bits, thresholds = folding.fold_sign_from_signs(
            weights, *_bn(params, bn, channels), every_integer=True)
        kind = 'conv_xnor'
    flipped = (bits != folding.sign_bits(weights)).any(axis=1)
    # (K, C * 9) in Chainer's (channel, row, column) order to (K, 9, C)
    taps = bits.reshape(channels, C, TAPS).transpose(0, 2, 1)
    conv = {'in_shape': [C, H, W], 'channels': channels, 'pool': pool}
    layer = packed_format.Layer(
        name, kind, C * H * W, 0, 'sign', pack_bits(taps),
        conv=conv, thresholds=thresholds,
        flipped=flipped.astype(numpy.uint8))
    layer.n_out = int(numpy.prod(layer.out_shape))
    return layer


def _dense_layer(params, index, n_in, units, last, chw):
    name = 'fc{}'.format(index)
    W = _get(params, name + '/W', (units, n_in))
    if chw is not None:
        # Chainer flattens (channel, row, column); the packed maps are
        # (row, column, channel)
        W = W.reshape((units,) + tuple(chw)).transpose(0, 2, 3, 1).reshape(
            units, n_in)
    bn = _bn(params, 'bn_' + name, units)
    if last:
        bits, affine = folding.fold_affine(W, *bn)
        return packed_format.Layer(
            name, 'xnor', n_in, units, 'affine', pack_bits(bits),
            **dict(zip(('mean', 'inv_std', 'gamma', 'beta'), affine)))
    bits, thresholds = folding.fold_sign_from_signs(W, *bn)
    return packed_format.Layer(name, 'xnor', n_in, units, 'sign',
                               pack_bits(bits), thresholds=thresholds)


def _conv_levels_layer(params, name, bn, shape, channels, pool, bits,
                       scale):
    """A k-bit convolution (``bits``: weight, input (8: pixels), output)."""
    C, H, W = shape
    weight_bits, input_bits, output_bits = bits
    planes, thresholds, flipped = level_folding.fold_conv_levels(
        _get(params, name + '/W', (channels, C, 3, 3)),
        _bn(params, bn, channels), weight_bits, output_bits,
        in_bits=None if input_bits == PIXEL_BITS else input_bits, scale=scale)
    layer = packed_format.Layer(
        name, 'conv_levels_pixels' if input_bits == PIXEL_BITS
        else 'conv_levels',
        C * H * W, 0, 'levels', planes,
        conv={'in_shape': [C, H, W], 'channels': channels, 'pool': pool},
        levels={'weight_bits': weight_bits, 'input_bits': input_bits,
                'output_bits': output_bits},
        thresholds=thresholds, flipped=flipped)
    layer.n_out = int(numpy.prod(layer.out_shape))
    return layer


def _dense_levels_layer(params, index, n_in, units, last, chw, bits):
    name = 'fc{}'.format(index)
    W = _get(params, name + '/W', (units, n_in))
    if chw is not None:  # (channel, row, column) to (row, column, channel)
        W = W.reshape((units,) + tuple(chw)).transpose(0, 2, 3, 1).reshape(
            units, n_in)
    bn = _bn(params, 'bn_' + name, units)
    weight_bits, input_bits = bits
    meta = {'weight_bits': weight_bits, 'input_bits': input_bits,
            'output_bits': None if last else input_bits}
    if last:
        planes, affine = level_folding.fold_levels_affine(W, bn, weight_bits,
                                                          input_bits)
        return packed_format.Layer(
            name, 'levels', n_in, units, 'affine', planes, levels=meta,
            **dict(zip(('mean', 'inv_std', 'gamma', 'beta'), affine)))
    planes, thresholds = level_folding.fold_levels(
        W, bn, weight_bits, input_bits, in_bits=input_bits)
    return packed_format.Layer(name, 'levels', n_in, units, 'levels', planes,
                               levels=meta, thresholds=thresholds)


def fold_convnet_levels(params, arch, in_shape, n_classes, scale,
                        weight_bits, activation_bits):
    """:func:`fold_convnet` for k-bit weights or activations (up to
    :data:`qnn.packed.level_folding.MAX_BITS`): ``conv_levels_pixels``,
    ``conv_levels`` and ``levels`` layers (:mod:`qnn.packed.level_folding`)."""
    layers = []
    shape = tuple(in_shape)
    for i, stage in enumerate(arch['conv'], 1):
        for j, channels in enumerate(stage, 1):
            bits = (weight_bits, activation_bits if layers else PIXEL_BITS,
                    activation_bits)
            layers.append(_conv_levels_layer(
                params, 'conv{}_{}'.format(i, j), 'bn{}_{}'.format(i, j),
                shape, channels, j == len(stage), bits, scale))
            shape = layers[-1].out_shape
    units = tuple(arch['fc']) + (n_classes,)
    n_in = int(numpy.prod(shape))
    for i, n in enumerate(units, 1):
        layers.append(_dense_levels_layer(
            params, i, n_in, n, i == len(units), shape if i == 1 else None,
            (weight_bits, activation_bits)))
        n_in = n
    return layers


def fold_convnet(params, arch, in_shape, n_classes, scale):
    """The packed layers of a BinaryConvNet.

    Args:
        params (dict): The predictor's arrays by name (``conv1_1/W``,
            ``bn1_1/gamma``, ..., ``fc1/W``, ``bn_fc1/avg_var``, ...).
        arch (dict): A value of :data:`net.ARCHITECTURES`.
        in_shape (tuple): (channels, height, width) of an image.
        n_classes (int): Outputs.
        scale (float): The network's input is pixel / ``scale``.

    Raises :class:`qnn.packed.folding.MissingParameter` or
    :class:`qnn.packed.folding.FoldingError`.
    """
    layers = []
    shape = tuple(in_shape)
    for i, stage in enumerate(arch['conv'], 1):
        for j, channels in enumerate(stage, 1):
            layers.append(_conv_layer(
                params, 'conv{}_{}'.format(i, j), 'bn{}_{}'.format(i, j),
                shape, channels, j == len(stage), not layers, scale))
            shape = layers[-1].out_shape
    units = tuple(arch['fc']) + (n_classes,)
    n_in = int(numpy.prod(shape))
    for i, n in enumerate(units, 1):
        layers.append(_dense_layer(params, i, n_in, n, i == len(units),
                                   shape if i == 1 else None))
        n_in = n
    return layers

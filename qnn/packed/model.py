"""The packed network of a trained model: its parameters folded
(:mod:`qnn.packed.mlp`, :mod:`qnn.packed.convnet`) as the options it was
trained with say, with the input the data set gives.

``options`` is the run's options as :func:`qnn.training.run_history.
read_options` returns them (every option there, checked).
"""
import os

import net
from qnn import datasets
from qnn.packed import convnet
from qnn.packed import format as packed_format
from qnn.packed import level_folding
from qnn.packed import mlp
from qnn.packed import wage_folding
from qnn.packed.bits import PIXEL_BITS
from qnn.utils.pixels import PIXEL_MAX

# the options a packed file records in its source, beside the versions
SOURCE_OPTIONS = ('arch', 'cnn_size', 'dataset', 'unit', 'layers', 'epoch',
                  'seed', 'weight_bits', 'activation_bits', 'quantizer',
                  'stochastic_activations', 'stochastic_weights',
                  'input_range')


class Unsupported(Exception):
    """The network is one the packed format does not hold; the message
    says what it has."""


def check_packable(options):
    """Raises :class:`Unsupported` unless the packed format holds the
    network these options train."""
    if options.arch == 'wage':
        bits = (wage_folding.WEIGHT_BITS, wage_folding.ACTIVATION_BITS)
        if (options.weight_bits, options.activation_bits) != bits:
            raise Unsupported(
                'a WAGE network ({} LeNet-5, {}-bit weights, {}-bit '
                'activations): the packed format holds WAGE networks of '
                '{}-bit weights and {}-bit activations; run it with '
                'train_mnist.py\'s model'.format(
                    options.wage_net, options.weight_bits,
                    options.activation_bits, *bits))
        return
    k_bits = (options.weight_bits, options.activation_bits) != (1, 1)
    if max(options.weight_bits, options.activation_bits) > \
            level_folding.MAX_BITS or k_bits and \
            options.quantizer != 'linear':
        raise Unsupported(
            'the network has {}-bit weights and {}-bit activations ({}, {} '
            'quantizer); the packed format holds networks of up to {} bits '
            'with the linear quantizer'.format(
                options.weight_bits, options.activation_bits, options.arch,
                options.quantizer, level_folding.MAX_BITS))
    if options.arch == 'cnn' and options.input_range != 'unit':
        raise Unsupported(
            'the ConvNet takes pixels in [-1, 1]; a packed convolution takes '
            '[0, 1] (--input-range unit), whose zero padding is the pixel 0')


def fold_layers(params, options, info, scale, shift):
    """The packed layers of the model whose predictor's arrays are
    ``params``; raises :class:`qnn.packed.folding.MissingParameter` or
    :class:`qnn.packed.folding.FoldingError`."""
    bits = (options.weight_bits, options.activation_bits)
    if options.arch == 'cnn':
        arch = net.ARCHITECTURES[options.cnn_size]
        if bits != (1, 1):
            return convnet.fold_convnet_levels(
                params, arch, info.shape, info.n_classes, scale, *bits)
        return convnet.fold_convnet(params, arch, info.shape,
                                    info.n_classes, scale)
    sizes = [info.in_size] + [options.unit] * options.layers + [
        info.n_classes]
    shift_bn = options.bn == 'shift'
    if bits != (1, 1):
        return mlp.fold_mlp_levels(params, sizes, *bits, scale, shift,
                                   options.bn_eps, shift_bn)
    return mlp.fold_mlp(params, sizes, scale, shift, options.bn_eps,
                        shift_bn)


def fold(params, options, source):
    """The :class:`qnn.packed.format.PackedNetwork` of the parameters
    ``params`` trained with ``options``; ``source`` is what the file
    records of where it came from (:func:`source_of`)."""
    check_packable(options)
    info = datasets.get_info(options.dataset)
    # the trainer's images p * range_scale / 255 + shift, as p / scale +
    # shift
    pixels = datasets.INPUT_RANGES[options.input_range]
    scale = PIXEL_MAX / pixels['scale']
    input = {'size': info.in_size, 'shape': list(info.shape),
             'dataset': info.name, 'pixel_bits': PIXEL_BITS,
             'scale': scale, 'shift': pixels['shift']}
    if options.arch == 'wage':
        layers, input['pixel_thresholds'] = wage_folding.fold_wage(
            params, options.wage_net, info.shape, info.n_classes,
            pixels['scale'], pixels['shift'])
    else:
        layers = fold_layers(params, options, info, scale, pixels['shift'])
    return packed_format.PackedNetwork(layers, input, source)


def describe(options):
    """The network of ``options`` in a few words: ``'MLP 2x1000'``,
    ``'CNN small, 2-bit weights and activations'``."""
    bits = (options.weight_bits, options.activation_bits)
    suffix = '' if bits == (1, 1) else ', {}-bit weights and ' \
        'activations'.format(bits[0]) if bits[0] == bits[1] else \
        ', {}-bit weights, {}-bit activations'.format(*bits)
    if options.arch == 'cnn':
        return 'CNN {}{}'.format(options.cnn_size, suffix)
    if options.arch == 'wage':
        return 'WAGE LeNet-5 {}{}'.format(options.wage_net, suffix)
    if options.bn == 'shift':
        suffix += ', shift-based BN'
    return 'MLP {}x{}{}'.format(options.layers, options.unit, suffix)


def source_of(snapshot, options, record):
    """What a packed file records of its origin: the snapshot's name, the
    options of :data:`SOURCE_OPTIONS` and the versions of the run's
    record."""
    config = {name: getattr(options, name) for name in SOURCE_OPTIONS}
    if options.arch == 'wage':
        config['wage_net'] = options.wage_net
    config['versions'] = record.get('versions')
    return {'snapshot': os.path.basename(snapshot), 'config': config}

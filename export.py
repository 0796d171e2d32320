#!/usr/bin/env python
"""Export a trained binarized network to a packed file of bits, or to ONNX.

Reads a training snapshot of train_mnist.py (the Trainer's NPZ) and the
config.json beside it, folds each batch normalization and sign into
integer thresholds (:mod:`qnn.packed.folding`), packs the weights to 64-bit
words and writes the file of :mod:`qnn.packed.format`; then prints its summary
(:mod:`qnn.packed.summary`). inference.py runs the file. ``--format onnx``
and ``--format qonnx`` write the same folded network as an ONNX graph
instead (:mod:`qnn.packed.onnx_export`; ``make onnx`` installs onnx).

    .venv/bin/python export.py result/snapshot_iter_12000 -o mlp.bnn
    .venv/bin/python export.py result/snapshot_iter_12000 --format onnx
"""
import argparse
import os
import sys

from qnn.utils import environment_check
environment_check.require('export.py')


from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import net
from qnn import datasets
from qnn.packed import convnet
from qnn.packed import folding
from qnn.packed import format as packed_format
from qnn.packed import levels
from qnn.packed import kernels as packed_kernels
from qnn.packed import summary as packed_summary
from qnn.serializers import npz_arrays
from qnn.training import run_history
from qnn.utils import atomic_files
from qnn.utils import errors
from qnn.utils import input_files
from qnn.utils.errors import fail

PREFIX = 'updater/model:main/predictor/'
PIXEL_SCALE = 255  # the data sets' images are pixels / 255
# the options a packed file records in its source
SOURCE_OPTIONS = ('arch', 'cnn_size', 'dataset', 'unit', 'layers', 'epoch',
                  'seed', 'weight_bits', 'activation_bits', 'quantizer',
                  'stochastic_activations', 'stochastic_weights',
                  'input_range', 'versions')
# the parameters folded, which must hold real floats
FLOATS = ('/W', '/gamma', '/beta', '/avg_mean', '/avg_var')
# --format: the default output's suffix (SNAPSHOT + suffix)
SUFFIXES = {'packed': '.bnn', 'onnx': '.onnx', 'qonnx': '.qonnx.onnx'}


class ExportError(Exception):
    """The snapshot cannot be exported; the message says why."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('snapshot', metavar='SNAPSHOT',
                        help='snapshot_iter_N written by train_mnist.py '
                        '(its config.json must be beside it)')
    parser.add_argument('-o', '--output', metavar='FILE', default=None,
                        help='file to write (default: SNAPSHOT.bnn, '
                        'SNAPSHOT.onnx or SNAPSHOT.qonnx.onnx)')
    parser.add_argument('--format', '-f', choices=tuple(SUFFIXES),
                        default='packed',
                        help='packed: the file of bits that inference.py '
                        'runs; onnx: a standard ONNX model; qonnx: the '
                        'QONNX dialect for FINN (default: packed)')
    return parser.parse_args(argv)


def read_config(snapshot):
    """The options of the run that wrote ``snapshot`` (its config.json, in
    today's option names: :func:`qnn.training.run_history.upgrade`)."""
    path = os.path.join(os.path.dirname(snapshot) or '.', 'config.json')
    try:
        config = input_files.read_json(path, run_history.MAX_CONFIG_BYTES,
                                       'a config.json')
    except FileNotFoundError:
        raise ExportError('{}: no config.json beside it ({}), so the '
                          'options it was trained with are unknown'.format(
                              snapshot, path))
    except (OSError, ValueError) as e:
        raise ExportError('{}: unreadable ({})'.format(path, e))
    if not isinstance(config, dict):
        raise ExportError('{}: not a config of train_mnist.py'.format(path))
    run_history.upgrade(config)
    weight_bits = config.get('weight_bits', 1)
    activation_bits = config.get('activation_bits', 1)
    k_bits = weight_bits != 1 or activation_bits != 1
    if max(weight_bits, activation_bits) > levels.MAX_BITS or k_bits and (
            config.get('quantizer', 'linear') != 'linear'):
        raise ExportError(
            '{}: the network has {}-bit weights and {}-bit activations '
            '({}, {} quantizer, {}); the packed format holds networks of '
            'up to {} bits with the linear quantizer'.format(snapshot, weight_bits, activation_bits,
                               config.get('arch', 'mlp'),
                               config.get('quantizer', 'linear'), path,
                               levels.MAX_BITS))
    if config.get('bn', 'standard') != 'standard' and \
            config.get('arch', 'mlp') != 'mlp':
        raise ExportError(
            '{}: the network uses {}-based batch normalization ({}); it is '
            'folded for MLPs only'.format(snapshot, config['bn'], path))
    if config.get('arch', 'mlp') == 'cnn' and \
            config.get('input_range', 'unit') != 'unit':
        raise ExportError(
            '{}: the ConvNet takes pixels in [-1, 1] ({}); a packed '
            'convolution takes [0, 1] (--input-range unit), whose zero '
            'padding is the pixel 0'.format(snapshot, path))
    return config


def read_parameters(snapshot, config=None):
    """``{'l1/W': array, 'b1/gamma': array, ...}`` of the model in the
    snapshot; no member may declare more bytes than the largest weight of
    the network ``config`` (default: :func:`read_config`'s) describes, in
    float64."""
    config = read_config(snapshot) if config is None else config
    try:
        info = datasets.get_info(config.get('dataset', 'mnist'))
        cnn = config.get('arch', 'mlp') == 'cnn'
        bound = 8 * net.largest_weight(info.shape, info.n_classes,
                                       config.get('unit'), cnn and
                                       config.get('cnn_size', 'small') or None)
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError('{}: its config.json describes no network of '
                          'train_mnist.py ({})'.format(snapshot, e))
    try:
        with input_files.open_regular(snapshot) as f:
            arrays = npz_arrays.read_arrays(f, PREFIX, bound, FLOATS)
    except Exception as e:  # zipfile, zlib and NumPy raise many types
        raise ExportError('cannot export {}: {}'.format(
            snapshot, npz_arrays.describe(e)))
    return {key[len(PREFIX):]: array for key, array in arrays.items()}


def fold(params, config, snapshot):
    """The packed network of the model parameters ``params`` and the
    options ``config`` it was trained with: :func:`fold_mlp` or
    :func:`qnn.packed.convnet.fold_convnet`."""
    info = datasets.get_info(config.get('dataset', 'mnist'))
    # the trainer's images p * range_scale / 255 + shift, as p / scale + shift
    pixels = datasets.INPUT_RANGES[config.get('input_range', 'unit')]
    scale = PIXEL_SCALE / pixels['scale']
    try:
        k_bits = (config.get('weight_bits', 1),
                  config.get('activation_bits', 1))
        if config.get('arch', 'mlp') == 'cnn' and k_bits != (1, 1):
            layers = convnet.fold_convnet_levels(
                params, net.ARCHITECTURES[config.get('cnn_size', 'small')],
                info.shape, info.n_classes, scale, *k_bits)
        elif config.get('arch', 'mlp') == 'cnn':
            layers = convnet.fold_convnet(
                params, net.ARCHITECTURES[config.get('cnn_size', 'small')],
                info.shape, info.n_classes, scale)
        elif k_bits != (1, 1):
            layers = fold_mlp_levels(params, config, info, scale,
                                     pixels['shift'])
        else:
            layers = fold_mlp(params, config, info, scale, pixels['shift'])
    except convnet.MissingParameter as e:
        raise ExportError('{}: {}'.format(snapshot, e))
    except folding.FoldingError as e:
        raise ExportError('{}: cannot fold it: {}'.format(snapshot, e))
    source = {'snapshot': os.path.basename(snapshot),
              'config': {k: config.get(k) for k in SOURCE_OPTIONS}}
    return packed_format.PackedNetwork(
        layers, {'size': info.in_size, 'shape': list(info.shape),
                 'dataset': info.name, 'pixel_bits': 8, 'scale': scale,
                 'shift': pixels['shift']}, source)


def _bn(params, i):
    return [params['b{}/{}'.format(i, k)]
            for k in ('gamma', 'beta', 'avg_mean', 'avg_var')]


def fold_mlp(params, config, info, scale, shift):
    """The packed layers of an MLP: ``l1`` on the pixels' bit planes,
    ``l2`` ... ``lL`` on signs, each followed by its BN and the sign folded
    into thresholds; ``l(L+1)`` with its BN as an affine map (``L`` =
    ``--layers``)."""
    hidden = config.get('layers', 2)
    eps = config.get('bn_eps', folding.DEFAULT_EPS)
    sizes = [info.in_size] + [config.get('unit')] * hidden + [
        info.n_classes]
    _check_mlp(params, sizes, config.get('unit'))
    # --bn shift normalizes the hidden layers only
    shift_bn = config.get('bn', 'standard') == 'shift'
    pack = packed_kernels.pack_bits
    layers = []
    for i in range(1, hidden + 2):
        W, name = params['l{}/W'.format(i)], 'l{}'.format(i)
        kind = 'planes' if i == 1 else 'xnor'
        if i == hidden + 1:
            bits, affine = folding.fold_affine(W, *_bn(params, i), eps=eps)
            layers.append(packed_format.Layer(
                name, kind, sizes[i - 1], sizes[i], 'affine', pack(bits),
                **dict(zip(('mean', 'inv_std', 'gamma', 'beta'), affine))))
        else:
            if i == 1:
                bn = _bn(params, i)
                if shift_bn:
                    bn = folding.shift_bn_as_standard(*bn, eps=eps)
                bits, thresholds = folding.fold_sign_from_pixels(
                    W, *bn, eps=eps, scale=scale, shift=shift)
            else:
                bits, thresholds = folding.fold_sign_from_signs(
                    W, *_bn(params, i), eps=eps, bn=folding.shift_bn
                    if shift_bn else folding.chainer_bn)
            layers.append(packed_format.Layer(
                name, kind, sizes[i - 1], sizes[i], 'sign', pack(bits),
                thresholds=thresholds))
    return layers


def fold_mlp_levels(params, config, info, scale, shift):
    """The packed layers of an MLP of k-bit weights or activations
    (:mod:`qnn.packed.levels`): ``levels_pixels``, then ``levels``."""
    hidden = config.get('layers', 2)
    eps = config.get('bn_eps', folding.DEFAULT_EPS)
    sizes = [info.in_size] + [config.get('unit')] * hidden + [
        info.n_classes]
    _check_mlp(params, sizes, config.get('unit'))
    kw, ka = config.get('weight_bits', 1), config.get('activation_bits', 1)
    layers = []
    for i in range(1, hidden + 2):
        W, bn = params['l{}/W'.format(i)], _bn(params, i)
        if config.get('bn', 'standard') == 'shift' and i <= hidden:
            # --bn shift normalizes the hidden layers only
            bn = folding.shift_bn_as_standard(*bn, eps=eps)
        meta = {'weight_bits': kw, 'input_bits': 8 if i == 1 else ka,
                'output_bits': ka if i <= hidden else None}
        kind = 'levels_pixels' if i == 1 else 'levels'
        if i == hidden + 1:
            planes, affine = levels.fold_levels_affine(W, bn, kw, ka, eps)
            layers.append(packed_format.Layer(
                'l{}'.format(i), kind, sizes[i - 1], sizes[i], 'affine',
                planes, levels=meta, **dict(zip(
                    ('mean', 'inv_std', 'gamma', 'beta'), affine))))
        else:
            planes, thresholds = levels.fold_levels(
                W, bn, kw, ka, eps, in_bits=None if i == 1 else ka,
                scale=scale, shift=shift)
            layers.append(packed_format.Layer(
                'l{}'.format(i), kind, sizes[i - 1], sizes[i], 'levels',
                planes, levels=meta, thresholds=thresholds))
    return layers


def _check_mlp(params, sizes, units):
    expected = {}
    for i in range(1, len(sizes)):
        expected['l{}/W'.format(i)] = (sizes[i], sizes[i - 1])
        for name in ('gamma', 'beta', 'avg_mean', 'avg_var'):
            expected['b{}/{}'.format(i, name)] = (sizes[i],)
    for key, shape in sorted(expected.items()):
        if key not in params:
            raise convnet.MissingParameter(
                'has no {}{}: not a snapshot of train_mnist.py\'s '
                'MLP'.format(PREFIX, key))
        if params[key].shape != shape:
            raise convnet.MissingParameter(
                '{} has shape {}, but config.json says --unit {} '
                '({})'.format(key, params[key].shape, units, shape))


def load(snapshot):
    """The folded network (:func:`fold`) of ``snapshot``."""
    try:  # a FIFO or a device is no snapshot (nor a reason to wait)
        input_files.open_regular(snapshot).close()
    except OSError as e:
        raise ExportError('{}: {}'.format(snapshot, 'no such file' if
                                          isinstance(e, FileNotFoundError)
                                          else e.strerror or e))
    config = read_config(snapshot)
    return fold(read_parameters(snapshot, config), config, snapshot)


def export(snapshot, output):
    """Writes the packed file of ``snapshot`` to ``output``; returns the
    network read back from it."""
    network = load(snapshot)
    try:
        packed_format.save(output, network, inputs=[snapshot])
    except OSError as e:
        raise ExportError('cannot write {}: {}'.format(
            output, e.strerror or e))
    return packed_format.load(output)


def onnx_exporter(dialect):
    """:mod:`qnn.packed.onnx_export`, imported only here (the packed path
    needs no onnx package), once it has found onnx."""
    from qnn.packed import onnx_export
    try:
        onnx_export.import_onnx()
    except ImportError as e:
        raise ExportError('--format {} needs the onnx package, which this '
                          'Python cannot import ({}): run make onnx'.format(
                              dialect, e))
    return onnx_export


def export_onnx(snapshot, output, dialect):
    """Writes the ONNX (``'onnx'``) or QONNX (``'qonnx'``) model of
    ``snapshot`` to ``output``; returns a line describing it."""
    onnx_export = onnx_exporter(dialect)
    network = load(snapshot)
    try:
        model = onnx_export.DIALECTS[dialect](network)
    except onnx_export.UnsupportedLayer as e:
        raise ExportError('{}: cannot export it to {}: {}'.format(
            snapshot, dialect, e))
    data = model.SerializeToString()
    try:
        atomic_files.write_atomically(output, lambda f: f.write(data),
                                      inputs=[snapshot])
    except OSError as e:
        raise ExportError('cannot write {}: {}'.format(
            output, e.strerror or e))
    return '{} {}\nfile size: {} bytes'.format(
        dialect.upper(), onnx_export.describe(model), len(data))


def main(argv=None):
    errors.program = 'export.py'
    args = parse_args(argv)
    output = args.output or args.snapshot + SUFFIXES[args.format]
    try:
        if args.format == 'packed':
            text = packed_summary.summary(export(args.snapshot, output))
        else:
            text = export_onnx(args.snapshot, output, args.format)
    except (ExportError, packed_format.PackedFileError) as e:
        fail(e)
    print('# {} -> {}'.format(args.snapshot, output))
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())

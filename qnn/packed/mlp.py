"""A trained :class:`net.MnistMLP` folded into packed layers.

The first layer reads the pixels' bit planes (``planes``, or
``levels_pixels`` for k-bit weights or activations), each hidden layer the
previous one's signs (``xnor``) or levels (``levels``); every hidden
layer's batch normalization and quantizer fold into integer thresholds
(:mod:`qnn.packed.folding`, :mod:`qnn.packed.level_folding`), the output
layer keeps its batch normalization as an affine map. With ``--bn shift``
the hidden layers' shift-based batch normalization folds as the standard
one of the same affine map.
"""
from qnn.packed import folding
from qnn.packed import format as packed_format
from qnn.packed import level_folding
from qnn.packed.bits import PIXEL_BITS
from qnn.packed.bits import pack_bits

AFFINE = ('mean', 'inv_std', 'gamma', 'beta')


def _bn(params, i):
    return [params['b{}/{}'.format(i, k)]
            for k in ('gamma', 'beta', 'avg_mean', 'avg_var')]


def check_parameters(params, sizes):
    """Raises :class:`qnn.packed.folding.MissingParameter` unless
    ``params`` holds the arrays of an MLP of layer ``sizes`` (input,
    hidden ..., classes)."""
    expected = {}
    for i in range(1, len(sizes)):
        expected['l{}/W'.format(i)] = (sizes[i], sizes[i - 1])
        for name in ('gamma', 'beta', 'avg_mean', 'avg_var'):
            expected['b{}/{}'.format(i, name)] = (sizes[i],)
    for key, shape in sorted(expected.items()):
        if key not in params:
            raise folding.MissingParameter(
                'has no {}: not a snapshot of train_mnist.py\'s MLP'.format(
                    key))
        if params[key].shape != shape:
            raise folding.MissingParameter(
                '{} has shape {}, but config.json says --unit {} '
                '({})'.format(key, params[key].shape, sizes[1], shape))


def fold_mlp(params, sizes, scale, shift, eps, shift_bn):
    """The packed layers of a binarized MLP: ``l1`` on the pixels' bit
    planes, ``l2`` ... ``lL`` on signs, each followed by its BN and the
    sign folded into thresholds; ``l(L+1)`` with its BN as an affine map.

    Args:
        params (dict): The predictor's arrays by name (``l1/W``,
            ``b1/gamma`` ...).
        sizes (list): Input, hidden layers' and output sizes.
        scale, shift (float): The network's input is ``pixel / scale +
            shift``.
        eps (float): The batch normalizations' epsilon.
        shift_bn (bool): The hidden layers' BN is shift-based.
    """
    check_parameters(params, sizes)
    last = len(sizes) - 1
    layers = []
    for i in range(1, last + 1):
        W, name = params['l{}/W'.format(i)], 'l{}'.format(i)
        kind = 'planes' if i == 1 else 'xnor'
        if i == last:
            bits, affine = folding.fold_affine(W, *_bn(params, i), eps=eps)
            layers.append(packed_format.Layer(
                name, kind, sizes[i - 1], sizes[i], 'affine', pack_bits(bits),
                **dict(zip(AFFINE, affine))))
            continue
        bn = _bn(params, i)
        if i == 1:
            if shift_bn:
                bn = folding.shift_bn_as_standard(*bn, eps=eps)
            bits, thresholds = folding.fold_sign_from_pixels(
                W, *bn, eps=eps, scale=scale, shift=shift)
        else:
            bits, thresholds = folding.fold_sign_from_signs(
                W, *bn, eps=eps, bn=folding.shift_bn
                if shift_bn else folding.chainer_bn)
        layers.append(packed_format.Layer(
            name, kind, sizes[i - 1], sizes[i], 'sign', pack_bits(bits),
            thresholds=thresholds))
    return layers


def fold_mlp_levels(params, sizes, weight_bits, activation_bits, scale,
                    shift, eps, shift_bn):
    """The packed layers of an MLP of k-bit weights or activations
    (:mod:`qnn.packed.level_folding`): ``levels_pixels``, then ``levels``;
    arguments as :func:`fold_mlp`'s."""
    check_parameters(params, sizes)
    last = len(sizes) - 1
    layers = []
    for i in range(1, last + 1):
        W, bn = params['l{}/W'.format(i)], _bn(params, i)
        if shift_bn and i < last:
            bn = folding.shift_bn_as_standard(*bn, eps=eps)
        meta = {'weight_bits': weight_bits,
                'input_bits': PIXEL_BITS if i == 1 else activation_bits,
                'output_bits': activation_bits if i < last else None}
        kind = 'levels_pixels' if i == 1 else 'levels'
        name = 'l{}'.format(i)
        if i == last:
            planes, affine = level_folding.fold_levels_affine(
                W, bn, weight_bits, activation_bits, eps)
            layers.append(packed_format.Layer(
                name, kind, sizes[i - 1], sizes[i], 'affine', planes,
                levels=meta, **dict(zip(AFFINE, affine))))
        else:
            planes, thresholds = level_folding.fold_levels(
                W, bn, weight_bits, activation_bits, eps,
                in_bits=None if i == 1 else activation_bits, scale=scale,
                shift=shift)
            layers.append(packed_format.Layer(
                name, kind, sizes[i - 1], sizes[i], 'levels', planes,
                levels=meta, thresholds=thresholds))
    return layers

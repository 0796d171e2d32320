"""A trained :class:`net.WageLeNet5` of 1-bit weights and 2-bit
activations folded into packed layers, without batch normalization: the
thresholds come from the layers' scales :math:`\\alpha` and the
quantizers' grids (:mod:`qnn.functions.wage_quantizers`).

The network's values, each exact in float32 (sums of a few hundred powers
of two):

* input: :math:`Q_A` of the pixels :math:`x = p \\, s / 255 + d` is
  :math:`\\sigma u` with an integer level :math:`u = u_0 + v`, where
  :math:`v = \\sum_m [p \\ge t_m]` counts the pixel thresholds :math:`t_m`
  (``input.pixel_thresholds``; :math:`u \\in \\{-1, 0, 1\\}` for
  2-bit activations on pixels in [-1, 1]);
* hidden layers: :math:`Q_A(\\mathrm{ReLU}(h)) \\in \\{0, \\sigma\\}`, a
  bit :math:`b` (:math:`\\sigma = 1/2`), sent on as :math:`s = 2b - 1`;
* weights: :math:`w = \\mathrm{sign}(W) = \\pm 1`, the layer computes
  :math:`h = (\\sigma / \\alpha) \\sum_i w_i q_i` with :math:`q_i` the
  input levels (:math:`u_i` or :math:`b_i`).

With :math:`c = \\sum_i w_i` (every tap of a valid convolution is inside
the image, so :math:`c` is the channel's, whatever the position):

.. math::

    \\sum_i w_i u_i = \\sum_i w_i v_i + u_0 c, \\qquad
    \\sum_i w_i b_i = \\frac{1}{2} \\left( \\sum_i w_i s_i + c \\right)

Max pooling and ReLU commute with the increasing maps between these sums,
so unit :math:`j` outputs :math:`\\sigma` iff its (pooled) integer sum
:math:`S = \\sum_i w_i q_i` reaches :math:`T_j`, the least integer whose
:math:`Q_A(\\mathrm{ReLU}(\\sigma S / \\alpha))` is :math:`\\sigma`, found by
running the quantizer on every :math:`S` the unit can have; on the packed
sums the threshold is :math:`T_j - u_0 c_j` (pixels) or
:math:`2 T_j - c_j` (:math:`\\pm 1` inputs). The output layer's logits are
:math:`(\\sigma / \\alpha) (A + c_j) / 2` for the packed sum
:math:`A = \\sum_i w_i s_i`: the affine map with ``mean`` :math:`-c_j`,
``inv_std`` :math:`\\sigma / (2 \\alpha)`, ``gamma`` 1 and ``beta`` 0, each
step exact, so the logits are Chainer's to the bit.
"""
import numpy

import net
from qnn.functions import wage_quantizers
from qnn.links import wage_layers
from qnn.packed import folding
from qnn.packed import format as packed_format
from qnn.packed.bits import pack_bits
from qnn.utils.pixels import PIXEL_MAX

KSIZE = 5  # WageLeNet5's convolutions
# the bits the packed layers hold: +-1 weights, hidden activations of two
# values after the ReLU
WEIGHT_BITS = 1
ACTIVATION_BITS = 2


def _weights(params, name, shape):
    key = name + '/W'
    if key not in params:
        raise folding.MissingParameter(
            'has no {}: not a snapshot of the WAGE network its config.json '
            'describes'.format(key))
    if params[key].shape != tuple(shape):
        raise folding.MissingParameter(
            '{} has shape {}, but the WAGE network its config.json describes '
            'has {}'.format(key, params[key].shape, tuple(shape)))
    return numpy.asarray(params[key], numpy.float32)


def pixel_levels(scale, shift, bits=ACTIVATION_BITS):
    """``(thresholds, u0)`` of the input quantizer :math:`Q_A` on the
    pixels :math:`p \\, s / 255 + d` (``scale`` :math:`s`, ``shift``
    :math:`d`, computed as the data sets do): :math:`Q_A = \\sigma (u_0 +
    \\sum_m [p \\ge t_m])`."""
    x = numpy.arange(PIXEL_MAX + 1).astype(numpy.float32)
    x *= scale / PIXEL_MAX
    x += numpy.float32(shift)
    sigma = wage_quantizers.sigma(bits)
    u = numpy.rint(wage_quantizers.quantize(x, bits) / sigma).astype(int)
    steps = numpy.diff(u)
    if (steps < 0).any() or (steps > 1).any() or u[-1] == u[0]:
        raise folding.FoldingError('the input quantizer gives the pixels '
                                   'the levels {}'.format(sorted(set(u))))
    return [int(p) for p in numpy.nonzero(steps)[0] + 1], int(u[0])


def unit_thresholds(alpha, n, bits=ACTIVATION_BITS):
    """The least integer sum :math:`S \\in [-n, n + 1]` at which
    :math:`Q_A(\\mathrm{ReLU}(\\sigma S / \\alpha))` is :math:`\\sigma`, the
    quantizer run in float32 as the network runs it (:math:`n + 1`: never).
    """
    sigma = wage_quantizers.sigma(bits)
    S = numpy.arange(-n, n + 1)
    h = numpy.float32(sigma / alpha) * S.astype(numpy.float32)
    q = wage_quantizers.quantize(numpy.maximum(h, 0), bits)
    on = q == numpy.float32(sigma)
    return int(S[on][0]) if on.any() else n + 1


def _alpha(fan_in):
    return wage_layers.wage_initializer(WEIGHT_BITS, fan_in)[1]


def _conv_layer(params, name, shape, channels, first, u0):
    """A valid 5x5 convolution and its pooling, thresholds folded."""
    C, H, W = shape
    w = folding.sign_bits(_weights(params, name, (channels, C, KSIZE,
                                                  KSIZE)))
    signs = numpy.where(w, 1, -1).reshape(channels, -1)
    c = signs.sum(axis=1)
    T = unit_thresholds(_alpha(C * KSIZE * KSIZE), signs.shape[1])
    thresholds = T - u0 * c if first else 2 * T - c
    # (K, C, 5, 5) in Chainer's order to (K, taps, C)
    taps = w.reshape(channels, C, KSIZE * KSIZE).transpose(0, 2, 1)
    layer = packed_format.Layer(
        name, 'conv_pixels' if first else 'conv_xnor', C * H * W, 0, 'sign',
        pack_bits(taps), conv={'in_shape': [C, H, W], 'channels': channels,
                               'pool': True, 'ksize': KSIZE, 'pad': 0},
        thresholds=thresholds.astype(numpy.int32),
        flipped=numpy.zeros(channels, numpy.uint8))
    layer.n_out = int(numpy.prod(layer.out_shape))
    return layer


def _dense_layer(params, name, n_in, units, last, chw):
    W = _weights(params, name, (units, n_in))
    if chw is not None:  # (channel, row, column) to (row, column, channel)
        W = W.reshape((units,) + tuple(chw)).transpose(0, 2, 3, 1).reshape(
            units, n_in)
    w = folding.sign_bits(W)
    c = numpy.where(w, 1, -1).sum(axis=1)
    alpha = _alpha(n_in)
    if last:
        sigma = wage_quantizers.sigma(ACTIVATION_BITS)
        ones = numpy.ones(units, numpy.float32)
        return packed_format.Layer(
            name, 'xnor', n_in, units, 'affine', pack_bits(w),
            mean=(-c).astype(numpy.float32),
            inv_std=ones * numpy.float32(sigma / (2 * alpha)), gamma=ones,
            beta=numpy.zeros(units, numpy.float32))
    T = unit_thresholds(alpha, n_in)
    return packed_format.Layer(name, 'xnor', n_in, units, 'sign',
                               pack_bits(w),
                               thresholds=(2 * T - c).astype(numpy.int32))


def fold_wage(params, size, shape, n_classes, scale, shift):
    """``(layers, pixel_thresholds)`` of the :class:`net.WageLeNet5`
    ``size`` (a key of :data:`net.WAGE_NETWORKS`) whose predictor's arrays
    are ``params``, on images of ``shape`` with pixels
    :math:`p \\, s / 255 + d` (``scale``, ``shift``)."""
    arch = net.WAGE_NETWORKS[size]
    thresholds, u0 = pixel_levels(scale, shift)
    layers = []
    for i, (channels, pad) in enumerate(arch['conv'], 1):
        if pad:
            raise folding.FoldingError(
                'conv{} pads its input; the folding holds valid '
                'convolutions'.format(i))
        layers.append(_conv_layer(params, 'conv{}'.format(i), shape,
                                  channels, i == 1, u0))
        shape = layers[-1].out_shape
    units = arch['fc'] + (n_classes,)
    n_in, chw = int(numpy.prod(shape)), shape
    for i, n in enumerate(units, 1):
        layers.append(_dense_layer(params, 'fc{}'.format(i), n_in, n,
                                   i == len(units), chw))
        n_in, chw = n, None
    return layers, thresholds

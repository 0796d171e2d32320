"""k-bit layers: weights and activations of 1 to 4 bits, folded and run
as exact integers.

The linear quantizer of :mod:`qst` with :math:`k` bits has the levels
:math:`-1 + 2i/L`, :math:`L = 2^k - 1`, :math:`i = 0 \\dots L`: a weight
is its level index :math:`v` and a hidden activation its index :math:`u`,
stored as :math:`k` bit planes (weights) or one ``uint8`` per value
(activations). A layer's integer sum

.. math::

    S = \\sum_i (2u_i - L_a)(2v_i - L_w) = L_a L_w \\, a, \\qquad
    S = \\sum_i p_i (2v_i - L_w) \\quad \\text{(the first layer, pixels)}

is exact; :math:`a` is the real pre-activation of the trained network
(with pixels, :math:`a = S / (\\text{scale}\\,L_w) + \\text{shift}\\,c
/ L_w`, :math:`c = \\sum_i (2v_i - L_w)`). For :math:`k = 1` these are the
:math:`\\pm 1` values of the binarized layers.

Batch normalization and the :math:`k_a`-bit quantizer fold into
:math:`L_a` thresholds per unit: the quantizer rounds half up, so the unit
reaches level :math:`m` iff :math:`y = \\gamma (a - \\mu) r + \\beta \\ge
y_m = (2m - 1)/L_a - 1`, i.e. (for :math:`\\gamma > 0`) iff :math:`a \\ge
t_m = \\mu + (y_m - \\beta)/(\\gamma r)`; its output is the number of
thresholds :math:`T_m = \\lceil L_a L_w t_m \\rceil` that :math:`S` reaches.
For :math:`\\gamma < 0` the weights are negated (:math:`v \\to L_w - v`)
and the thresholds taken on :math:`-a`, as for the sign
(:mod:`qnn.packed.folding`); :math:`\\gamma = 0` gives a constant level.
The thresholds come from the float32 parameters in float64: the trained
network computes :math:`a` in float32 (not exactly: its levels are no
integers), so a unit within float32 rounding of a boundary can differ.

The output layer keeps its batch normalization as the affine map of
:func:`qnn.packed.folding.fold_affine`, its mean and ``inv_std`` rescaled
so that it applies to :math:`S`.

Kernels: :func:`reference_sums` in ``int64`` (the reference) and
:func:`popcount_sums`, bit-serial popcounts on the planes of the inputs and
weights (numba, the path of ``inference.py``).
"""
import numpy

import qst
from qnn.packed import folding
from qnn.packed import kernels
from qnn.packed.format import MAX_BITS  # NOQA: F401  (the format's limit)

TAPS = 9


def n_levels(bits):
    """:math:`L = 2^k - 1`, the largest level index of ``bits`` bits."""
    return 2 ** bits - 1


def weight_levels(W, bits):
    """Level indices ``int64`` of the real weights ``W`` under the
    ``bits``-bit linear quantizer (the trained network's ``q(W)``)."""
    if numpy.isnan(W).any():
        raise folding.FoldingError('NaN weights')
    q = qst.quantize(numpy.asarray(W, numpy.float32), bits, 'linear')
    return numpy.rint((q.astype(numpy.float64) + 1) * n_levels(bits) /
                      2).astype(numpy.int64)


def pack_levels(v, bits):
    """``(units, n)`` level indices to bit planes ``(units, bits, words)``
    (plane ``b`` holds bit ``b`` of every index)."""
    return numpy.stack([kernels.pack_bits((v >> b) & 1) for b in range(bits)],
                       axis=1)


def unpack_levels(planes, n):
    """Inverse of :func:`pack_levels`: ``int64`` ``(units, n)``."""
    v = numpy.zeros((planes.shape[0], n), numpy.int64)
    for b in range(planes.shape[1]):
        v |= kernels.unpack_bits(planes[:, b], n).astype(numpy.int64) << b
    return v


def _boundaries(out_bits):
    m = numpy.arange(1, n_levels(out_bits) + 1)
    return (2 * m - 1) / n_levels(out_bits) - 1


def fold_levels(W, bn, weight_bits, out_bits, eps=folding.DEFAULT_EPS,
                in_bits=None, scale=255., shift=0.):
    """Folds a hidden layer: ``(planes, thresholds)``.

    Args:
        W (ndarray): Real weights ``(units, n)``.
        bn: ``(gamma, beta, mean, var)`` of the layer's batch normalization.
        weight_bits (int): Bits of the weights.
        out_bits (int): Bits of the activations it outputs.
        in_bits (int or None): Bits of its input activations; ``None``:
            8-bit pixels ``p``, the network's input being ``p / scale +
            shift``.

    Returns:
        ``uint64`` planes ``(units, weight_bits, words)`` of the weight
        levels (negated where :math:`\\gamma < 0`) and ``int32``
        thresholds ``(units, 2^out_bits - 1)``, ascending.
    """
    folding._check_bn(*bn)
    v = weight_levels(W, weight_bits)
    L_w = n_levels(weight_bits)
    gamma, beta, mean, var = (numpy.asarray(x, numpy.float64) for x in bn)
    r = 1 / numpy.sqrt(var + eps)
    flip = gamma < 0
    v = numpy.where(flip[:, None], L_w - v, v)
    n = W.shape[1]
    with numpy.errstate(divide='ignore', invalid='ignore', over='ignore'):
        t = mean[:, None] + (_boundaries(out_bits)[None] - beta[:, None]) / (
            gamma[:, None] * r[:, None])
        t = numpy.where(flip[:, None], -t, t)
        if in_bits is None:
            bound = 255 * n * L_w
            c = (2 * v - L_w).sum(axis=1)[:, None]
            T = numpy.ceil(scale * (L_w * t - shift * c))
        else:
            bound = n * n_levels(in_bits) * L_w
            T = numpy.ceil(n_levels(in_bits) * L_w * t)
    constant = (gamma == 0)[:, None] | ~numpy.isfinite(T)
    reached = beta[:, None] >= _boundaries(out_bits)[None]
    T = numpy.where(constant, numpy.where(reached, -bound, bound + 1),
                    numpy.clip(T, -bound, bound + 1))
    return pack_levels(v, weight_bits), T.astype(numpy.int32)


def fold_levels_affine(W, bn, weight_bits, in_bits,
                       eps=folding.DEFAULT_EPS):
    """The output layer: weight planes and the affine map of
    :func:`qnn.packed.folding.fold_affine` on :math:`S = L_a L_w a`."""
    _, (mean, inv_std, gamma, beta) = folding.fold_affine(W, *bn, eps=eps)
    factor = numpy.float32(n_levels(in_bits) * n_levels(weight_bits))
    return pack_levels(weight_levels(W, weight_bits), weight_bits), (
        mean * factor, inv_std / factor, gamma, beta)


def signed_weights(layer):
    """The layer's :math:`2v - L_w` as ``int64`` ``(n_out, n_in)``."""
    return signed_weights_of(layer, layer.n_in)


def signed_weights_of(layer, n):
    """:math:`2v - L_w` of the layer's weight planes over ``n`` values."""
    return 2 * unpack_levels(layer.weights, n) - n_levels(
        layer.levels['weight_bits'])


def signed_inputs(layer, x):
    """The layer's input as integers: pixels, or :math:`2u - L_a`."""
    x = numpy.asarray(x, numpy.int64)
    if layer.kind == 'levels_pixels':
        return x
    return 2 * x - n_levels(layer.levels['input_bits'])


def reference_sums(layer, x):
    """Integer sums ``int64`` ``(B, n_out)``, by integer arithmetic."""
    return signed_inputs(layer, x) @ signed_weights(layer).T


def popcount_sums(layer, x):
    """:func:`reference_sums` from the popcounts of pairs of bit planes
    (:mod:`qnn.packed.kernels`, ``'level_sums'``): with
    :math:`P_j = \\sum_i x_i v_{ij}` and :math:`X = \\sum_i x_i`,

    .. math::

        S_j = 2P_j - L_w X \\quad \\text{(pixels)}, \\qquad
        S_j = 4P_j - 2 L_w X - 2 L_a \\sum_i v_{ij} + n L_a L_w

    (:math:`(2u - L_a)(2v - L_w)` expanded)."""
    x = numpy.require(x, numpy.uint8, ['C', 'W'])
    pixels = layer.kind == 'levels_pixels'
    bits = kernels.PIXEL_BITS if pixels else layer.levels['input_bits']
    L_w = n_levels(layer.levels['weight_bits'])
    L_a = n_levels(bits)
    WT = layer.cached('planes_transposed', lambda: numpy.ascontiguousarray(
        layer.weights.transpose(1, 2, 0)))
    gamma = layer.cached(('gamma', pixels), lambda: numpy.zeros(
        layer.n_out, numpy.int64) if pixels else (
            layer.n_in * L_a * L_w - 2 * L_a * unpack_levels(
                layer.weights, layer.n_in).sum(axis=1)))
    sums = numpy.empty((len(x), layer.n_out), numpy.int64)
    kernels._numba_kernels()['level_sums'](
        x, bits, WT, 2 if pixels else 4, -L_w if pixels else -2 * L_w,
        gamma, sums)
    return sums


def count_levels(sums, thresholds):
    """:func:`output_levels` on all cores (numba)."""
    out = numpy.empty(sums.shape, numpy.uint8)
    kernels._numba_kernels()['count_levels'](
        numpy.ascontiguousarray(sums), numpy.ascontiguousarray(thresholds),
        out)
    return out


def fold_conv_levels(W, bn, weight_bits, out_bits, eps=folding.DEFAULT_EPS,
                     in_bits=None, scale=255.):
    """Folds a k-bit 3x3 convolution as :func:`fold_levels` folds a dense
    layer: ``W`` ``(K, C, 3, 3)`` real weights; returns the planes ``(K,
    weight_bits, words)`` over each filter's 9 C values in (tap, channel)
    order, the ``int32`` thresholds ``(K, 2^out_bits - 1)`` and the
    ``flipped`` channels (:math:`\\gamma < 0`: weights negated, the sums
    pooled with the minimum, as :mod:`qnn.packed.convnet` does for the
    sign). The thresholds do not depend on the position: a tap outside the
    image adds 0 to the real sum, and nothing to :math:`S` either."""
    K = len(W)
    taps = numpy.asarray(W).reshape(K, W.shape[1], 9).transpose(0, 2, 1)
    planes, thresholds = fold_levels(taps.reshape(K, -1), bn, weight_bits,
                                     out_bits, eps, in_bits, scale)
    return planes, thresholds, (numpy.asarray(bn[0]) < 0).astype(numpy.uint8)


def conv_level_maps(layer, x, count=None):
    """A k-bit convolution's output levels ``uint8`` ``(B, H', W', K)``:
    ``x`` is pixels ``(B, C*H*W)`` (``'conv_levels_pixels'``) or level
    maps ``(B, H, W, C)``; integer sums over the valid taps
    (:func:`qnn.packed.conv_kernels.conv_sums`), pooled (the minimum for a
    flipped channel), then the levels their thresholds give (counted by
    ``count``, :func:`output_levels` by default); in float32 (BLAS) where
    every sum is an integer below 2^24, in int64 beyond. The path of every
    backend: no bit kernels for it yet."""
    from qnn.packed import conv_kernels
    C, H, Wd = layer.conv['in_shape']
    K = layer.conv['channels']
    x = numpy.asarray(x, numpy.int64)
    if layer.kind == 'conv_levels_pixels':
        values = x.reshape(len(x), C, H, Wd)
    else:
        values = (2 * x - n_levels(layer.levels['input_bits'])).transpose(
            0, 3, 1, 2)
    W = layer.cached('signed_taps', lambda: signed_weights_of(
        layer, TAPS * C).reshape(K, TAPS, C).transpose(0, 2, 1).reshape(
            K, C, 3, 3))
    bound = TAPS * C * n_levels(layer.levels['weight_bits']) * (
        255 if layer.kind == 'conv_levels_pixels'
        else n_levels(layer.levels['input_bits']))
    sums = conv_kernels.conv_sums(
        values, W, numpy.float32 if bound < 2 ** 24 else numpy.int64)
    if layer.conv['pool']:
        sums = conv_kernels.pool(sums, layer.flipped)
    B, K, H2, W2 = sums.shape
    maps = (count or output_levels)(
        numpy.ascontiguousarray(sums.transpose(0, 2, 3, 1)).reshape(-1, K),
        layer.thresholds)
    return maps.reshape(B, H2, W2, K)


def output_levels(sums, thresholds):
    """Each unit's level: the number of its thresholds the sum reaches."""
    return (numpy.asarray(sums)[:, :, None] >= thresholds[None]).sum(
        axis=2).astype(numpy.uint8)

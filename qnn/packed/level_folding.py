"""k-bit layers folded: weights and activations of 1 to 4 bits as level
indices and integer thresholds (their arithmetic:
:mod:`qnn.packed.level_kernels`).

The linear quantizer of :mod:`qst` with :math:`k` bits has the levels
:math:`-1 + 2i/L`, :math:`L = 2^k - 1`, :math:`i = 0 \\dots L`: a weight
is its level index :math:`v` and a hidden activation its index :math:`u`.
A layer's integer sum

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
"""
import numpy

import qst
from qnn.functions.batch_normalization_sign import DEFAULT_EPS
from qnn.packed import folding
from qnn.packed.bits import n_levels
from qnn.packed.bits import pack_levels
from qnn.packed.format import MAX_BITS  # NOQA: F401  (the format's limit)
from qnn.packed.format import TAPS
from qnn.utils.pixels import PIXEL_MAX


def weight_levels(W, bits):
    """Level indices ``int64`` of the real weights ``W`` under the
    ``bits``-bit linear quantizer (the trained network's ``q(W)``)."""
    if numpy.isnan(W).any():
        raise folding.FoldingError('NaN weights')
    q = qst.quantize(numpy.asarray(W, numpy.float32), bits, 'linear')
    return numpy.rint((q.astype(numpy.float64) + 1) * n_levels(bits) /
                      2).astype(numpy.int64)


def _boundaries(out_bits):
    m = numpy.arange(1, n_levels(out_bits) + 1)
    return (2 * m - 1) / n_levels(out_bits) - 1


def fold_levels(W, bn, weight_bits, out_bits, eps=DEFAULT_EPS,
                in_bits=None, scale=float(PIXEL_MAX), shift=0.):
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
    folding.check_bn(*bn)
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
            bound = PIXEL_MAX * n * L_w
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


def fold_levels_affine(W, bn, weight_bits, in_bits, eps=DEFAULT_EPS):
    """The output layer: weight planes and the affine map of
    :func:`qnn.packed.folding.fold_affine` on :math:`S = L_a L_w a`."""
    _, (mean, inv_std, gamma, beta) = folding.fold_affine(W, *bn, eps=eps)
    factor = numpy.float32(n_levels(in_bits) * n_levels(weight_bits))
    return pack_levels(weight_levels(W, weight_bits), weight_bits), (
        mean * factor, inv_std / factor, gamma, beta)


def fold_conv_levels(W, bn, weight_bits, out_bits, eps=DEFAULT_EPS,
                     in_bits=None, scale=float(PIXEL_MAX)):
    """Folds a k-bit 3x3 convolution as :func:`fold_levels` folds a dense
    layer: ``W`` ``(K, C, 3, 3)`` real weights; returns the planes ``(K,
    weight_bits, words)`` over each filter's 9 C values in (tap, channel)
    order, the ``int32`` thresholds ``(K, 2^out_bits - 1)`` and the
    ``flipped`` channels (:math:`\\gamma < 0`: weights negated, the sums
    pooled with the minimum, as :mod:`qnn.packed.convnet` does for the
    sign). The thresholds do not depend on the position: a tap outside the
    image adds 0 to the real sum, and nothing to :math:`S` either."""
    K = len(W)
    taps = numpy.asarray(W).reshape(K, W.shape[1], TAPS).transpose(0, 2, 1)
    planes, thresholds = fold_levels(taps.reshape(K, -1), bn, weight_bits,
                                     out_bits, eps, in_bits, scale)
    return planes, thresholds, (numpy.asarray(bn[0]) < 0).astype(numpy.uint8)

"""Batch normalization and sign folded into integer thresholds.

A hidden unit of :class:`net.MnistMLP` in evaluation mode computes

.. math::

    h = \\mathrm{sign}(\\gamma (a - \\mu) r + \\beta), \\qquad
    r = 1 / \\sqrt{\\sigma^2 + \\epsilon} > 0, \\qquad
    \\mathrm{sign}(0) = +1,

of its pre-activation :math:`a = x \\cdot \\mathrm{sign}(w)`. As a
function of :math:`a`, :math:`y = \\gamma (a - \\mu) r + \\beta` is
increasing for :math:`\\gamma > 0`, decreasing for :math:`\\gamma < 0`,
constant :math:`\\beta` for :math:`\\gamma = 0`. So, with
:math:`t = \\mu - \\beta / (\\gamma r)` where :math:`y = 0`:

* :math:`\\gamma > 0`: :math:`h = +1 \\iff a \\ge t`;
* :math:`\\gamma < 0`: :math:`h = +1 \\iff a \\le t \\iff -a \\ge -t`: the
  sign flip. :math:`-a = x \\cdot (-\\mathrm{sign}(w))`, so the unit's
  weights are negated (their bits inverted) and the test is again
  :math:`a' \\ge -t`;
* :math:`\\gamma = 0`: :math:`h = +1` for every input if :math:`\\beta \\ge
  0`, for none otherwise.

:math:`a'` is an integer (a sum of :math:`\\pm 1`, or of :math:`\\pm p` for
8-bit pixels :math:`p`), so the test is :math:`a' \\ge T` with the integer
:math:`T = \\lceil t' \\rceil` (:math:`t'` the threshold on :math:`a'`); at
:math:`a' = t'` exactly :math:`y = 0` and the unit is :math:`+1`, as
sign(0) = +1 in :mod:`qst`. "Always" is :math:`T = -A` and "never"
:math:`T = A + 1`, :math:`A` the largest :math:`|a'|`.

Two ways to find :math:`T`:

* :func:`fold_sign_from_signs` (inputs :math:`\\pm 1`): the training graph
  computes :math:`a` exactly (integers below :math:`2^{24}` in float32) and
  then the float32 arithmetic of Chainer's ``fixed_batch_normalization``,
  whose rounding can move the sign change by one step of :math:`a` from
  the real :math:`t`. Each operation rounds monotonically, so :math:`y` is
  still monotone in :math:`a`: this function evaluates Chainer's own
  function on every value :math:`a` can take (:math:`n + 1` of them) and
  takes :math:`T` where its sign changes. The folded unit then equals the
  Chainer unit bit for bit, for every input.
* :func:`fold_sign_from_pixels` (first layer, pixels :math:`p / s`, s = 255):
  :math:`a = \\sum_i w_i p_i / s`, whose float32 value in Chainer depends on
  BLAS's order of summation; here :math:`t` is computed from the float32
  parameters in float64 and :math:`T` on the integer :math:`s a` is
  :math:`\\lceil s t \\rceil` (sign flipped as above). It can differ from
  Chainer's float32 unit only where :math:`y` is within float32 rounding of
  0.

The output layer keeps its batch normalization as the affine map of
:func:`fold_affine`.
"""
import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.functions as F

from qnn.functions.batch_normalization_sign import DEFAULT_EPS
from qnn.utils.pixels import PIXEL_MAX


class FoldingError(Exception):
    """The parameters cannot be folded (e.g. NaN); the message says why."""


class MissingParameter(ValueError):
    """The parameters lack an array the network needs, or hold one of
    another shape; the message names it."""


def sign_bits(W):
    """``True`` where the sign quantizer makes +1 (:math:`w \\ge 0`, sign(0)
    = +1 as :func:`qst.quantize`); raises :class:`FoldingError` for NaN."""
    W = numpy.asarray(W)
    if numpy.isnan(W).any():
        raise FoldingError('NaN weights')
    return W >= 0


def check_bn(gamma, beta, mean, var):
    """Raises :class:`FoldingError` unless the batch normalization's
    parameters are finite and its variance is not negative."""
    for name, value in (('gamma', gamma), ('beta', beta), ('mean', mean),
                        ('var', var)):
        if not numpy.isfinite(value).all():
            raise FoldingError('non-finite batch normalization {}'.format(
                name))
    if (numpy.asarray(var) < 0).any():
        raise FoldingError('negative batch normalization variance')


def chainer_bn(a, gamma, beta, mean, var, eps=DEFAULT_EPS):
    """Chainer's evaluation-mode batch normalization of ``a`` ``(B, units)``
    in float32: the very function :class:`net.MnistMLP` calls."""
    with chainer.using_config('train', False):
        return F.fixed_batch_normalization(
            numpy.asarray(a, numpy.float32), *(
                numpy.asarray(v, numpy.float32)
                for v in (gamma, beta, mean, var)), eps=eps).array


def _from_sign_table(positive, grid, bound):
    """Thresholds and flips from ``positive[v, j]`` (unit ``j`` is +1 at
    pre-activation ``grid[v]``, ascending)."""
    n_values, units = positive.shape
    thresholds = numpy.empty(units, numpy.int64)
    flip = numpy.zeros(units, bool)
    for j in range(units):
        column = positive[:, j]
        ones = numpy.flatnonzero(column)
        if len(ones) == n_values:
            thresholds[j] = -bound  # always +1
        elif len(ones) == 0:
            thresholds[j] = bound + 1  # never
        elif ones[-1] == n_values - 1 and len(ones) == n_values - ones[0]:
            thresholds[j] = grid[ones[0]]  # +1 from grid[ones[0]] on
        elif ones[0] == 0 and len(ones) == ones[-1] + 1:
            flip[j] = True  # +1 up to grid[ones[-1]]: -a >= -grid[...]
            thresholds[j] = -grid[ones[-1]]
        else:
            raise FoldingError('unit {}: the sign of its batch normalization '
                               'is not monotone in its input'.format(j))
    return thresholds, flip


def shift_bn(a, gamma, beta, mean, var, eps=DEFAULT_EPS):
    """The evaluation-mode shift-based batch normalization of ``a``
    ``(B, units)`` in float32, the function :class:`net.MnistMLP` calls with
    ``bn='shift'``: :math:`(a - \\mu) \\, \\mathrm{AP2}(\\gamma) \\,
    \\mathrm{AP2}((\\sigma^2 + \\epsilon)^{-1/2}) + \\beta`."""
    from qnn.functions import shift_batch_normalization
    with chainer.using_config('train', False):
        return shift_batch_normalization.fixed_shift_batch_normalization(
            numpy.asarray(a, numpy.float32), *(
                numpy.asarray(v, numpy.float32)
                for v in (gamma, beta, mean, var)), eps=eps).array


def shift_bn_as_standard(gamma, beta, mean, var, eps=DEFAULT_EPS):
    """``(gamma, beta, mean, var)`` of the standard batch normalization
    (with ``eps``) that is the same affine map as :func:`shift_bn`, in
    float64: the rounded scale as gamma and a variance whose
    :math:`(\\sigma^2 + \\epsilon)^{-1/2}` is 1."""
    from qnn.functions.ap2 import ap2
    g = ap2(numpy.asarray(gamma, numpy.float32))
    s = ap2(1 / numpy.sqrt(numpy.asarray(var, numpy.float32) +
                           numpy.float32(eps)))
    return (g.astype(numpy.float64) * s, numpy.asarray(beta, numpy.float64),
            numpy.asarray(mean, numpy.float64),
            numpy.full(len(g), 1.0 - eps))


def fold_sign_from_signs(W, gamma, beta, mean, var, eps=DEFAULT_EPS,
                         every_integer=False, bn=chainer_bn):
    """Folds a layer with :math:`\\pm 1` inputs, its batch normalization
    and the sign (see the module documentation).

    Args:
        W (ndarray): Real weights ``(units, n)`` (their signs are used).
        gamma, beta, mean, var (ndarray): The ``(units,)`` parameters and
            running statistics of the batch normalization.
        eps (float): Its epsilon.
        every_integer (bool): The sums take every integer in
            :math:`[-n, n]`, not only those of :math:`n`'s parity: a
            convolution, whose zero padding drops taps at the borders.
        bn: The trained network's evaluation-mode normalization,
            :func:`chainer_bn` or :func:`shift_bn`.

    Returns:
        tuple: ``(bits, thresholds)``: ``bool`` ``(units, n)`` weight bits
        with the flip applied (1 is +1) and ``int32`` ``(units,)``; the unit
        is +1 iff :math:`\\sum_i x_i w'_i \\ge T`.
    """
    bits = sign_bits(W)
    check_bn(gamma, beta, mean, var)
    n = bits.shape[1]
    grid = numpy.arange(-n, n + 1, 1 if every_integer else 2,
                        dtype=numpy.int64)
    y = bn(numpy.repeat(grid[:, None], len(gamma), axis=1).astype(
        numpy.float32), gamma, beta, mean, var, eps)
    if numpy.isnan(y).any():
        raise FoldingError('batch normalization gives NaN')
    thresholds, flip = _from_sign_table(y >= 0, grid, n)
    return bits ^ flip[:, None], thresholds.astype(numpy.int32)


def fold_sign_from_pixels(W, gamma, beta, mean, var, eps=DEFAULT_EPS,
                          scale=PIXEL_MAX, pixel_max=PIXEL_MAX, shift=0.):
    """Folds the first layer, whose input is
    :math:`x_i = p_i / \\text{scale} + \\text{shift}` for integer pixels
    :math:`0 \\le p_i \\le \\text{pixel_max}`.

    Returns ``(bits, thresholds)`` as :func:`fold_sign_from_signs`, the
    test being on the integer :math:`s = \\sum_i p_i w'_i`: with
    :math:`c = \\sum_i w_i`, the layer's sum is
    :math:`a = s / \\text{scale} + \\text{shift} \\cdot c`, so
    :math:`a \\ge t` is :math:`s \\ge \\text{scale}
    (t - \\text{shift} \\cdot c)`.
    """
    bits = sign_bits(W)
    check_bn(gamma, beta, mean, var)
    bound = pixel_max * bits.shape[1]
    g = numpy.asarray(gamma, numpy.float64)
    b = numpy.asarray(beta, numpy.float64)
    mu = numpy.asarray(mean, numpy.float64)
    r = 1 / numpy.sqrt(numpy.asarray(var, numpy.float64) + eps)
    flip = g < 0
    with numpy.errstate(divide='ignore', invalid='ignore', over='ignore'):
        # threshold on the integer s = scale * (a - shift * c) (then on -s
        # if flipped); c is the sum of the unflipped signs
        c = numpy.where(bits, 1., -1.).sum(axis=1) if shift else 0.
        t = scale * (mu - b / (g * r) - shift * c)
        t = numpy.where(flip, -t, t)
        T = numpy.ceil(t)
    # gamma = 0 (or so small that t overflows): constant sign(beta)
    constant = (g == 0) | ~numpy.isfinite(t)
    T = numpy.where(constant, numpy.where(b >= 0, -bound, bound + 1),
                    numpy.clip(T, -bound, bound + 1))
    flip &= ~constant
    return bits ^ flip[:, None], T.astype(numpy.int32)


def fold_affine(W, gamma, beta, mean, var, eps=DEFAULT_EPS):
    """The output layer: weight bits and the affine map
    :math:`y = ((a - \\mu) r) \\gamma + \\beta` as ``float32`` arrays
    ``(mean, inv_std, gamma, beta)``, :math:`r` computed as Chainer does
    (:math:`\\sqrt{1 / (\\sigma^2 + \\epsilon)}` in float32), so that the
    logits of an exact integer :math:`a` are Chainer's to the bit
    (:func:`qnn.packed.forward.affine_logits` applies it)."""
    bits = sign_bits(W)
    check_bn(gamma, beta, mean, var)
    var = numpy.asarray(var, numpy.float32) + numpy.float32(eps)
    inv_std = numpy.sqrt(numpy.reciprocal(var), dtype=numpy.float32)
    return bits, tuple(numpy.asarray(v, numpy.float32) for v in (
        mean, inv_std, gamma, beta))

"""Shift-based batch normalization (Hubara et al. 2016) as Chainer functions.

In training, over the batch (all axes but axis 1, the channels):

.. math::

    \\mu &= \\mathrm{mean}(x), \\qquad
    \\sigma^2 = \\mathrm{mean}((x - \\mu)^2) \\\\
    y &= \\mathrm{AP2}(\\gamma) \\cdot
        \\mathrm{AP2}\\left(\\frac{1}{\\sqrt{\\sigma^2 + \\epsilon}}\\right)
        \\cdot (x - \\mu) + \\beta

with :func:`qnn.functions.ap2.ap2`: both factors of the centered input are
powers of two, so normalizing and scaling are bit shifts. In evaluation the
running averages take the place of :math:`\\mu` and :math:`\\sigma^2`
(:func:`fixed_shift_batch_normalization`), rounded the same way.

Where this differs from the paper's algorithm: the variance is the exact
mean of squares (the paper also approximates it, as
:math:`\\mathrm{mean}(C \\cdot \\mathrm{AP2}(C))` with :math:`C = x - \\mu`);
only the scale is rounded, which is what makes the transform shift-only.

Gradient: a straight-through estimator through both roundings. The backward
pass is the exact gradient of

.. math::

    y = \\bigl(\\gamma + [\\mathrm{AP2}(\\gamma) - \\gamma]\\bigr)
        \\bigl(r + [\\mathrm{AP2}(r) - r]\\bigr) (x - \\mu) + \\beta,
    \\qquad r = (\\sigma^2 + \\epsilon)^{-1/2}

with the brackets held constant: the rounded values where they multiply,
:math:`\\partial\\,\\mathrm{AP2}(u) / \\partial u := 1` where they are
differentiated. With :math:`g = \\mathrm{AP2}(\\gamma)`,
:math:`s = \\mathrm{AP2}(r)`, :math:`m` elements per channel and
:math:`\\bar{\\cdot}` the mean over them:

.. math::

    \\frac{\\partial L}{\\partial \\beta} &= \\sum g_y, \\qquad
    \\frac{\\partial L}{\\partial \\gamma} = s \\sum g_y (x - \\mu) \\\\
    \\frac{\\partial L}{\\partial x} &= g s \\, (g_y - \\overline{g_y})
        - \\frac{g \\, r^3}{m} (x - \\mu) \\sum g_y (x - \\mu)

Where no rounding happens (:math:`g = \\gamma`, :math:`s = r`) this is the
gradient of ordinary batch normalization. The rounded factors are piecewise
constant, so their true derivative (0 almost everywhere) would leave
:math:`\\gamma` untrained and drop the variance's part of the gradient.
The gradients are first order only (no double backward).
"""
from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import backend
from chainer import function_node
from chainer.utils import type_check

from qnn.functions.ap2 import ap2
from qnn.functions.batch_normalization_sign import DEFAULT_EPS


def _axes(x):
    # every axis but the channel axis 1
    return (0,) + tuple(range(2, x.ndim))


def _expander(x):
    # (C,) -> (1, C, 1, ...)
    return (None, Ellipsis) + (None,) * (x.ndim - 2)


def _check_inputs(in_types, n):
    type_check._argname(in_types, ('x', 'gamma', 'beta', 'mean', 'var')[:n])
    x_type, gamma_type = in_types[:2]
    type_check.expect(
        x_type.dtype.kind == 'f',
        x_type.ndim >= 2,
        gamma_type.ndim == 1,
        x_type.shape[1] == gamma_type.shape[0],
    )
    for t in in_types[1:]:
        type_check.expect(t.dtype == x_type.dtype, t.shape == gamma_type.shape)


class ShiftBatchNormalization(function_node.FunctionNode):

    """Shift-based batch normalization with batch statistics (training).

    See the module docstring for the transform and its gradient.
    ``running_mean`` and ``running_var``, if given, are updated in place as
    :class:`chainer.links.BatchNormalization` updates its own:
    :math:`\\bar{\\mu} \\leftarrow d \\bar{\\mu} + (1 - d) \\mu`,
    :math:`\\bar{\\sigma}^2 \\leftarrow d \\bar{\\sigma}^2
    + (1 - d) \\frac{m}{m - 1} \\sigma^2` (unbiased), :math:`d` = ``decay``.
    """

    def __init__(self, eps=DEFAULT_EPS, running_mean=None, running_var=None,
                 decay=0.9):
        if eps <= 0:
            raise ValueError('eps must be positive, got {}'.format(eps))
        if not 0 <= decay < 1:
            raise ValueError('decay must be in [0, 1), got {}'.format(decay))
        self.eps = eps
        self.running_mean = running_mean
        self.running_var = running_var
        self.decay = decay

    def check_type_forward(self, in_types):
        type_check.expect(in_types.size() == 3)
        _check_inputs(in_types, 3)

    def forward(self, inputs):
        self.retain_inputs((0,))
        x, gamma, beta = inputs
        axes, e = _axes(x), _expander(x)
        dtype = x.dtype.type
        mean = x.mean(axis=axes)
        xc = x - mean[e]
        var = (xc * xc).mean(axis=axes)
        r = 1 / backend.get_array_module(x).sqrt(var + dtype(self.eps))
        self.g = ap2(gamma)
        self.s = ap2(r)
        self.r = r
        # g * s is a power of two: normalizing and scaling are one shift
        y = xc * (self.g * self.s)[e] + beta[e]
        if self.running_mean is not None:
            m = x.size // gamma.size
            decay = self.decay
            self.running_mean *= decay
            self.running_mean += (1 - decay) * mean
            self.running_var *= decay
            self.running_var += (1 - decay) * (m / max(m - 1, 1)) * var
        self.mean = mean
        return y,

    def backward(self, indexes, grad_outputs):
        x = self.get_retained_inputs()[0].array
        gy = grad_outputs[0].array
        axes, e = _axes(x), _expander(x)
        m = x.size // self.g.size
        xc = x - self.mean[e]
        gbeta = gy.sum(axis=axes)
        gy_xc = (gy * xc).sum(axis=axes)
        ggamma = self.s * gy_xc
        # through s = AP2(r) as if it were r: dr/dvar = -r^3 / 2, and
        # dvar/dx = 2 (x - mean) / m
        gvar_x = (-self.g * self.r ** 3 * gy_xc / m)[e] * xc
        gx = (self.g * self.s)[e] * (gy - gy.mean(axis=axes)[e]) + gvar_x
        return tuple(chainer.Variable(g) for g in (gx, ggamma, gbeta))


class FixedShiftBatchNormalization(function_node.FunctionNode):

    """Shift-based batch normalization with given statistics (evaluation).

    .. math::

        y = \\mathrm{AP2}(\\gamma) \\,
            \\mathrm{AP2}\\bigl((\\bar{\\sigma}^2 + \\epsilon)^{-1/2}\\bigr)
            (x - \\bar{\\mu}) + \\beta

    Gradients flow to ``x``, ``gamma`` (straight through AP2) and ``beta``;
    the statistics get none (they are constants, as in inference).
    """

    def __init__(self, eps=DEFAULT_EPS):
        if eps <= 0:
            raise ValueError('eps must be positive, got {}'.format(eps))
        self.eps = eps

    def check_type_forward(self, in_types):
        type_check.expect(in_types.size() == 5)
        _check_inputs(in_types, 5)

    def forward(self, inputs):
        self.retain_inputs((0, 3))
        x, gamma, beta, mean, var = inputs
        e = _expander(x)
        xp = backend.get_array_module(x)
        self.g = ap2(gamma)
        self.s = ap2(1 / xp.sqrt(var + x.dtype.type(self.eps)))
        y = (x - mean[e]) * (self.g * self.s)[e] + beta[e]
        return y,

    def backward(self, indexes, grad_outputs):
        x, mean = (v.array for v in self.get_retained_inputs())
        gy = grad_outputs[0].array
        axes, e = _axes(x), _expander(x)
        gx = gy * (self.g * self.s)[e]
        ggamma = self.s * (gy * (x - mean[e])).sum(axis=axes)
        gbeta = gy.sum(axis=axes)
        return (chainer.Variable(gx), chainer.Variable(ggamma),
                chainer.Variable(gbeta), None, None)


def shift_batch_normalization(x, gamma, beta, eps=DEFAULT_EPS,
                              running_mean=None, running_var=None,
                              decay=0.9):
    """Shift-based batch normalization over the batch (training).

    Args:
        x (:class:`~chainer.Variable` or :ref:`ndarray`): Input, shape
            ``(N, C, ...)``.
        gamma, beta (:class:`~chainer.Variable` or :ref:`ndarray`): Scale
            (rounded to a power of two) and shift, shape ``(C,)``.
        eps (float): Added to the variance.
        running_mean, running_var (:ref:`ndarray` or None): Running
            averages to update in place.
        decay (float): Their decay rate.

    Returns:
        ~chainer.Variable: ``y``, shape and dtype of ``x``.
    """
    return ShiftBatchNormalization(eps, running_mean, running_var,
                                   decay).apply((x, gamma, beta))[0]


def fixed_shift_batch_normalization(x, gamma, beta, mean, var,
                                    eps=DEFAULT_EPS):
    """Shift-based batch normalization with given statistics (evaluation).

    Args:
        x, gamma, beta: As for :func:`shift_batch_normalization`.
        mean, var (:ref:`ndarray`): The statistics, shape ``(C,)``.
        eps (float): Added to ``var``.

    Returns:
        ~chainer.Variable: ``y``, shape and dtype of ``x``.
    """
    return FixedShiftBatchNormalization(eps).apply(
        (x, gamma, beta, mean, var))[0]

"""Quantization with a straight-through estimator (QST).

The forward pass replaces a real value by its quantized value; the backward
pass pretends the quantizer was the identity inside [-1, 1] and a constant
outside it (Hubara et al. 2016, "Quantized Neural Networks", eq. 4):

.. math::

    q(x) = \\mathrm{sign}(x) = \\begin{cases} +1 & x \\ge 0 \\\\
                                           -1 & x < 0 \\end{cases}
    \\qquad
    \\frac{\\partial L}{\\partial x} =
        \\frac{\\partial L}{\\partial q} \\, 1_{|x| \\le 1}

:func:`quantize` is the one implementation of :math:`q`; activations
(:func:`qst`) and weights (:func:`function_quantized_linear.quantized_linear`)
both call it.
"""
import numbers

from chainer import backend
from chainer import function_node
from chainer import utils
from chainer.utils import type_check


def check_bits(bits):
    """Returns ``bits`` if this module can quantize to that many bits.

    Only binarization (``bits=1``) is implemented so far; the argument exists
    so that k-bit quantizers can be added without changing any caller.
    """
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise TypeError('bits must be an integer, not {!r}'.format(bits))
    if bits != 1:
        raise ValueError(
            'bits={}: only bits=1 (binarization) is implemented'.format(bits))
    return int(bits)


def quantize(x, bits=1):
    """Quantizes an array (NumPy or CuPy) to ``bits`` bits.

    For ``bits=1`` this is :math:`\\mathrm{sign}(x)` with
    :math:`\\mathrm{sign}(0) = +1`, so the result holds exactly -1 and +1
    (``numpy.sign`` would map 0 to 0); NaN stays NaN, so that a diverged
    value cannot hide behind a valid -1 or +1. The dtype of ``x`` is kept.

    Args:
        x (:ref:`ndarray`): Real values.
        bits (int): Bit width; see :func:`check_bits`.

    Returns:
        :ref:`ndarray`: A new array of the shape and dtype of ``x``.
    """
    check_bits(bits)
    xp = backend.get_array_module(x)
    # sign(x) + [sign(x) == 0]: keeps NaN (a diverged value must not turn
    # into a valid +-1), and is several times faster than
    # xp.where(x >= 0, 1, -1) on NumPy.
    y = utils.force_array(xp.sign(x))  # a 0-d input gives a scalar
    y += (y == 0)
    return y


def ste_mask(x):
    """Returns :math:`1_{|x| \\le 1}` as an array of ``x``'s dtype.

    This is the gradient of the hard tanh that the straight-through
    estimator puts in place of the quantizer's (zero almost everywhere)
    derivative; it cancels the gradient where :math:`|x| > 1`.
    """
    xp = backend.get_array_module(x)
    return utils.force_array(xp.abs(x) <= 1, x.dtype)


class QuantizeSTE(function_node.FunctionNode):

    """Quantize in forward, hard-tanh straight-through estimator in backward.

    See :func:`qst`.
    """

    def __init__(self, bits=1):
        self.bits = check_bits(bits)

    def check_type_forward(self, in_types):
        type_check._argname(in_types, ('x',))
        x_type, = in_types
        type_check.expect(x_type.dtype.kind == 'f')

    def forward(self, inputs):
        x, = inputs
        self.retain_inputs((0,))
        return quantize(x, self.bits),

    def backward(self, indexes, grad_outputs):
        x, = self.get_retained_inputs()
        gy, = grad_outputs
        # The mask is a constant of the backward graph: the derivative of
        # the hard tanh is zero almost everywhere.
        return gy * ste_mask(x.array),


def qst(x, bits=1):
    """Quantizes with a straight-through estimator.

    .. math::

        y = q(x), \\qquad g_x = g_y \\cdot 1_{|x| \\le 1}

    where :math:`q` is :func:`quantize` (``bits=1``: sign with
    :math:`\\mathrm{sign}(0) = +1`).

    Args:
        x (:class:`~chainer.Variable` or :ref:`ndarray`): Input of a
            floating point dtype (float16, float32 or float64).
        bits (int): Bit width of the quantized value.

    Returns:
        ~chainer.Variable: Output of the same shape and dtype as ``x``.
    """
    y, = QuantizeSTE(bits).apply((x,))
    return y

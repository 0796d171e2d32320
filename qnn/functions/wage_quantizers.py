"""WAGE's quantizers of weights, activations and errors (Wu et al. 2018).

"Training and Inference with Integers in Deep Neural Networks" (ICLR 2018)
quantizes the Weights, Activations, Gradients and Errors of a network
without batch normalization. With :math:`k` bits, the grid step and the
power-of-two shift are

.. math::

    \\sigma(k) = 2^{1-k}, \\qquad
    \\mathrm{Shift}(x) = 2^{\\mathrm{round}(\\log_2 x)}

and the basic quantizer clips to :math:`[-1 + \\sigma(k), 1 - \\sigma(k)]`
and rounds to the grid :math:`\\sigma(k) \\mathbb{Z}` (halves up, as
:func:`qst.quantize`); for :math:`k = 1` it is :math:`\\mathrm{sign}(x)`
with :math:`\\mathrm{sign}(0) = +1`, and for :math:`k = 32` it only clips
to :math:`[-1, 1]`:

.. math::

    Q_k(x) = \\sigma(k) \\, \\mathrm{round}\\left(
        \\frac{\\mathrm{clip}(x, -1 + \\sigma(k), 1 - \\sigma(k))}
              {\\sigma(k)}\\right)

* W (:func:`wage_weight`): :math:`W_q = Q_{k_W}(W) / \\alpha`, with the
  layer's power-of-two scale :math:`\\alpha` fixed at initialization
  (:func:`layer_scale`); the gradient passes straight through, clip and
  rounding included.
* A (:func:`wage_activation`): :math:`a_q = Q_{k_A}(a)`; the gradient
  passes through the rounding but keeps the clip's,
  :math:`1_{-1+\\sigma \\le a \\le 1-\\sigma}`.
* E (:func:`wage_error`): the identity forward; backward the error is
  :math:`e_q = Q_{k_E}(e / \\mathrm{Shift}(\\max|e|))`.

G, the update, is :class:`qnn.optimizers.wage_sgd.WageSGD`. Its shift and
its rounding are :func:`shift` and :func:`qst.quantize`'s, as are those of
:func:`qst.quantize_gradient` (``--gradient-bits``/``--error-bits`` of the
batch-normalized networks); on a WAGE network the same two options are
:math:`k_G` and :math:`k_E`. A zero maximum (an all-zero error or
gradient) has :math:`\\mathrm{Shift}(0) = 1`: the zeros stay zeros instead
of the :math:`0/0` = NaN of a division by :math:`2^{-\\infty}`.
"""
import math

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import backend
from chainer import function_node
from chainer import utils
from chainer.utils import type_check

import qst


def sigma(bits):
    """:math:`\\sigma(k) = 2^{1-k}`, the grid step of ``bits`` bits."""
    return 2.0 ** (1 - bits)


def shift(x):
    """:math:`\\mathrm{Shift}(x) = 2^{\\mathrm{round}(\\log_2 x)}` of an
    array of non-negative values, elementwise; 0 gives 1 and NaN stays NaN.
    """
    xp = backend.get_array_module(x)
    e = utils.force_array(xp.log2(xp.where(x == 0, 1, x)))
    return qst._exp2(qst._round(e, False))


def scalar_shift(x):
    """:func:`shift` of one Python number (0 gives 1)."""
    return 1.0 if x == 0 else 2.0 ** math.floor(math.log2(x) + 0.5)


def layer_scale(bits, limit):
    """:math:`\\alpha = \\max(1, \\mathrm{Shift}(1.5 \\, \\sigma(k_W) /
    L))`, the power-of-two scale of a layer whose weights' initializer has
    the limit :math:`L = \\sqrt{3 / \\mathrm{fan_{in}}}` (WAGE's): it takes
    the quantized weights, whose largest level is near 1, back to about
    the size the initializer would give them."""
    return max(1.0, scalar_shift(1.5 * sigma(bits) / limit))


def quantize(x, bits):
    """:math:`Q_k(x)` (see the module): a new array of ``x``'s dtype."""
    bits = qst.check_bits(bits)
    xp = backend.get_array_module(x)
    if bits == 1:
        return qst._sign(x)
    if bits == qst.FULL_PRECISION:
        return utils.force_array(xp.clip(x, -1, 1), x.dtype)
    s = sigma(bits)
    v = utils.force_array(xp.clip(x, -1 + s, 1 - s)).astype(
        qst._work_dtype(x.dtype), copy=False)
    v /= s
    v = qst._round(v, False)
    v *= s
    return v.astype(x.dtype, copy=False)


def clip_mask(x, bits):
    """:math:`1_{-1+\\sigma(k) \\le x \\le 1-\\sigma(k)}` (:math:`k = 1`
    and 32: :math:`1_{|x| \\le 1}`) in ``x``'s dtype: the gradient of
    :func:`quantize`'s clip."""
    if bits in (1, qst.FULL_PRECISION):
        return qst.ste_mask(x)
    xp = backend.get_array_module(x)
    s = sigma(bits)
    return utils.force_array((x >= -1 + s) & (x <= 1 - s), x.dtype)


def quantize_error(e, bits):
    """:math:`Q_{k_E}(e / \\mathrm{Shift}(\\max|e|))`; ``bits=32`` returns
    ``e`` itself. A NaN anywhere makes all of it NaN."""
    if bits == qst.FULL_PRECISION:
        return e
    xp = backend.get_array_module(e)
    amax = xp.abs(e).max()
    scaled = utils.force_array(e / shift(amax).astype(e.dtype), e.dtype)
    return quantize(scaled, bits)


class WageWeight(function_node.FunctionNode):

    """:math:`Q_{k_W}(W) / \\alpha` forward, the identity backward; see
    :func:`wage_weight`."""

    def __init__(self, bits, scale):
        self.bits = qst.check_bits(bits)
        self.scale = float(scale)

    def check_type_forward(self, in_types):
        type_check._argname(in_types, ('W',))
        w_type, = in_types
        type_check.expect(w_type.dtype.kind == 'f')

    def forward(self, inputs):
        w, = inputs
        y = quantize(w, self.bits)
        if self.scale != 1:
            y /= y.dtype.type(self.scale)
        return y,

    def backward(self, indexes, grad_outputs):
        return grad_outputs


def wage_weight(w, bits, scale=1.0):
    """WAGE's quantized weight:

    .. math::

        W_q = Q_{k_W}(W) / \\alpha, \\qquad g_W = g_{W_q}

    Args:
        w (:class:`~chainer.Variable` or :ref:`ndarray`): Real weights.
        bits (int): :math:`k_W`, 1..32 (1: sign).
        scale (float): :math:`\\alpha` (:func:`layer_scale`).

    Returns:
        ~chainer.Variable: The quantized weights.
    """
    y, = WageWeight(bits, scale).apply((w,))
    return y


class WageActivation(function_node.FunctionNode):

    """:math:`Q_{k_A}` forward, the clip's gradient backward; see
    :func:`wage_activation`."""

    def __init__(self, bits):
        self.bits = qst.check_bits(bits)

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
        return gy * clip_mask(x.array, self.bits),


def wage_activation(x, bits):
    """WAGE's quantized activation:

    .. math::

        y = Q_{k_A}(x), \\qquad
        g_x = g_y \\, 1_{-1+\\sigma(k_A) \\le x \\le 1-\\sigma(k_A)}

    Args:
        x (:class:`~chainer.Variable` or :ref:`ndarray`): Input.
        bits (int): :math:`k_A`, 1..32.

    Returns:
        ~chainer.Variable: The quantized activations.
    """
    y, = WageActivation(bits).apply((x,))
    return y


class WageError(function_node.FunctionNode):

    """The identity forward, :func:`quantize_error` backward; see
    :func:`wage_error`."""

    def __init__(self, bits):
        self.bits = qst.check_gradient_bits(bits)

    def check_type_forward(self, in_types):
        type_check._argname(in_types, ('x',))
        x_type, = in_types
        type_check.expect(x_type.dtype.kind == 'f')

    def forward(self, inputs):
        x, = inputs
        return x.copy(),

    def backward(self, indexes, grad_outputs):
        gy, = grad_outputs
        if self.bits == qst.FULL_PRECISION:
            return gy,
        # rounding has no useful derivative: a leaf of the backward graph
        return chainer.Variable(quantize_error(gy.array, self.bits),
                                requires_grad=False),


def wage_error(x, bits):
    """Quantizes the error that flows back through ``x``:

    .. math::

        y = x, \\qquad
        g_x = Q_{k_E}\\left(\\frac{g_y}{\\mathrm{Shift}(\\max|g_y|)}\\right)

    Args:
        x (:class:`~chainer.Variable` or :ref:`ndarray`): Input.
        bits (int): :math:`k_E`, 2..32 (32: not quantized).

    Returns:
        ~chainer.Variable: ``x``, whose error is quantized.
    """
    y, = WageError(bits).apply((x,))
    return y


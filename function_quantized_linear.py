"""Linear function whose weight is quantized in forward (straight through)."""
import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import function_node
from chainer import utils
from chainer.utils import type_check

from qnn.backends import binary_matmul
import qst


class QuantizedLinearFunction(function_node.FunctionNode):

    """Linear function with quantized weight; see :func:`quantized_linear`."""

    def __init__(self, quantization=None, stochastic=False):
        self.quantization = qst.Quantization.checked(quantization)
        # stochastic rounding of W in this call (training only)
        self.stochastic = bool(stochastic)

    def check_type_forward(self, in_types):
        n_in = in_types.size()
        type_check.expect(2 <= n_in, n_in <= 3)
        x_type, w_type = in_types[:2]
        type_check._argname((x_type, w_type), ('x', 'W'))
        type_check.expect(
            x_type.dtype.kind == 'f',
            w_type.dtype == x_type.dtype,
            x_type.ndim == 2,
            w_type.ndim == 2,
        )
        type_check.expect(x_type.shape[1] == w_type.shape[1])
        if type_check.eval(n_in) == 3:
            b_type = in_types[2]
            type_check._argname((b_type,), ('b',))
            type_check.expect(
                b_type.dtype == x_type.dtype,
                b_type.ndim == 1,
                b_type.shape[0] == w_type.shape[0],
            )

    def forward(self, inputs):
        x, W = inputs[:2]
        if (isinstance(x, numpy.ndarray)
                and not (x.flags.c_contiguous or x.flags.f_contiguous)):
            # numpy.dot rejects some non-contiguous operands
            x = numpy.ascontiguousarray(x)
        # q(W) is computed once and kept for backward.
        q = self.quantization
        self.W_quantized = qst.quantize(W, q.weight_bits, q.quantizer,
                                        self.stochastic)
        # with x of +-1 too, exact integers by XNOR and popcount
        y = binary_matmul.dot(x, self.W_quantized, q.weight_bits == 1)
        if len(inputs) == 3:
            y += inputs[2]
        self.retain_inputs((0,))
        return y,

    def backward(self, indexes, grad_outputs):
        x, = self.get_retained_inputs()
        gy, = grad_outputs
        if not chainer.config.enable_backprop and \
                isinstance(gy.array, numpy.ndarray):
            return self._backward_arrays(indexes, x.array, gy.array)
        ret = []
        if 0 in indexes:
            gx = chainer.functions.matmul(gy, self.W_quantized)
            ret.append(qst.quantized_gradient_leaf(
                gx, self.quantization.error_bits))
        if 1 in indexes:
            # straight through: dL/dW := dL/dq(W)
            gW = chainer.functions.matmul(gy, x, transa=True)
            ret.append(qst.quantized_gradient_leaf(
                gW, self.quantization.gradient_bits))
        if 2 in indexes:
            ret.append(chainer.functions.sum(gy, axis=0))
        return ret

    def _backward_arrays(self, indexes, x, gy):
        # a first-order backward (Chainer's default) on the CPU builds no
        # graph: the same products straight on the arrays, without the
        # Python work of three more FunctionNodes per layer
        ret = []
        if 0 in indexes:
            gx = numpy.matmul(gy, self.W_quantized)
            ret.append(qst.quantized_gradient_leaf(
                chainer.Variable(gx, requires_grad=False),
                self.quantization.error_bits))
        if 1 in indexes:
            gW = numpy.matmul(gy.T, x)
            ret.append(qst.quantized_gradient_leaf(
                chainer.Variable(gW, requires_grad=False),
                self.quantization.gradient_bits))
        if 2 in indexes:
            ret.append(chainer.Variable(gy.sum(axis=0), requires_grad=False))
        return ret


def quantized_linear(x, W, b=None, n_batch_axes=1, quantization=None):
    """Linear function with a quantized weight matrix.

    .. math::

        y = x \\, q(W)^\\top + b, \\qquad
        g_x = g_y \\, q(W), \\qquad g_W = g_y^\\top x, \\qquad
        g_b = \\textstyle\\sum_n g_{y,n}

    with :math:`q` = :func:`qst.quantize` of ``quantization.weight_bits``
    bits (1: sign with :math:`\\mathrm{sign}(0) = +1`), computed once per
    call. The gradient with respect to :math:`q(W)` is handed straight
    through to the real-valued :math:`W` (the paper clips :math:`W` to
    [-1, 1] after each update, see :class:`weight_clip.WeightClip`, so the
    hard-tanh cancellation would never act on it); :math:`q(W)` is a
    constant of the graph built by backward.

    With ``gradient_bits`` (``error_bits``) below 32, :math:`g_W`
    (:math:`g_x`, the error propagated to the layer below) is quantized by
    :func:`qst.quantize_gradient` (stochastic rounding on a per-tensor
    power-of-two scale); such a gradient is not differentiated further.
    Like :func:`chainer.functions.linear`, an input with more than
    ``n_batch_axes + 1`` dimensions is flattened to 2-D first.

    Args:
        x (:class:`~chainer.Variable` or :ref:`ndarray`): Input of shape
            :math:`(s_B, s_1, \\dots, s_n)` with float dtype.
        W (:class:`~chainer.Variable` or :ref:`ndarray`): Real-valued weight
            of shape :math:`(M, N)`, :math:`N = s_1 \\cdots s_n`.
        b (:class:`~chainer.Variable` or :ref:`ndarray`): Bias of shape
            :math:`(M,)`, or ``None``.
        n_batch_axes (int): Number of leading batch axes of ``x``.
        quantization (qst.Quantization): Its ``weight_bits``,
            ``quantizer``, ``stochastic_weights`` (while
            ``chainer.config.train`` is ``True``), ``gradient_bits`` and
            ``error_bits`` apply (default: sign, gradients not quantized).

    Returns:
        ~chainer.Variable: Output of shape :math:`(s_B, M)`.
    """
    quantization = qst.Quantization.checked(quantization)
    if n_batch_axes <= 0:
        raise ValueError('n_batch_axes should be greater than 0.')
    if n_batch_axes > 1:
        batch_shape = x.shape[:n_batch_axes]
        x = x.reshape(utils.size_of_shape(batch_shape), -1)
    elif x.ndim > 2:
        x = x.reshape(x.shape[0], -1)
    args = (x, W) if b is None else (x, W, b)
    stochastic = quantization.stochastic_weights and chainer.config.train
    y, = QuantizedLinearFunction(quantization, stochastic).apply(args)
    if n_batch_axes > 1:
        y = y.reshape(batch_shape + (-1,))
    return y

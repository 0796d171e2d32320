"""Fully-connected layer with a quantized weight (real-valued W kept)."""
from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer.links
from chainer import utils

import function_quantized_linear
from qnn.links.quantized_weight import QuantizedWeight


class QuantizedLinear(QuantizedWeight, chainer.links.Linear):

    """Linear layer whose weight is quantized in the forward pass.

    A drop-in replacement for :class:`chainer.links.Linear` (same arguments,
    lazy initialization with ``in_size=None``, same initializers) that
    computes :func:`function_quantized_linear.quantized_linear`:

    .. math:: y = x \\, q(W)^\\top + b

    The parameter ``W`` stays real-valued; the optimizer updates it with the
    straight-through gradient and :class:`weight_clip.WeightClip` keeps it in
    [-1, 1]. Only ``W`` is quantized; ``b`` (if any) stays real.

    Args:
        in_size (int or None): Input dimension; ``None`` defers
            initialization to the first forward pass.
        out_size (int): Output dimension.
        nobias (bool): If ``True``, no bias.
        initialW: Initializer of ``W`` (default: :math:`N(0, 1/\\text{in})`).
        initial_bias: Initializer of ``b`` (default: zero).
        quantization (qst.Quantization): How ``W`` and the gradients are
            quantized (its ``weight_bits``, ``quantizer``,
            ``stochastic_weights``, ``gradient_bits``, ``error_bits``;
            default: sign).
    """

    def __init__(self, in_size, out_size=None, nobias=False,
                 initialW=None, initial_bias=None, quantization=None):
        self._set_quantization(quantization)
        super(QuantizedLinear, self).__init__(
            in_size, out_size, nobias, initialW, initial_bias)

    def forward(self, x, n_batch_axes=1):
        """Applies the layer; see :meth:`chainer.links.Linear.forward`."""
        if self.W.array is None:
            self._initialize_params(
                utils.size_of_shape(x.shape[n_batch_axes:]))
        return function_quantized_linear.quantized_linear(
            x, self.W, self.b, n_batch_axes, self.quantization)

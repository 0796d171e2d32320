"""WAGE's layers: a linear layer and a convolution with quantized weights,
no bias, and a power-of-two layer scale in place of batch normalization."""
import math

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.functions as F

from qnn.functions import wage_quantizers
from qnn.functions.quantized_convolution_2d import quantized_convolution_2d
import qst

# the project's CPU convolution (patches taken once, in the order of one
# matrix product; Chainer's tensordot copies them twice) on a filter that
# is quantized already: 32 bits only clips to [-1, 1], which Q_k(W) / alpha
# is in
_PLAIN = qst.Quantization(weight_bits=32, activation_bits=32)


def wage_initializer(bits, fan_in):
    """``(initializer, alpha)`` of a layer with ``fan_in`` inputs and
    ``bits``-bit weights, as WAGE initializes them:

    .. math::

        L = \\sqrt{3 / \\mathrm{fan_{in}}}, \\qquad
        W \\sim U(-\\max(L, 1.5\\,\\sigma(k_W)), \\max(L, 1.5\\,\\sigma(k_W))),
        \\qquad \\alpha = \\max(1, \\mathrm{Shift}(1.5\\,\\sigma(k_W) / L))

    (:func:`qnn.functions.wage_quantizers.layer_scale`): the real weights
    start wide enough to spread over the quantizer's levels, and
    :math:`\\alpha` divides the quantized weights back to about
    :math:`L`."""
    bits = qst.check_bits(bits)
    limit = math.sqrt(3.0 / fan_in)
    width = max(limit, 1.5 * wage_quantizers.sigma(bits))
    return (chainer.initializers.Uniform(width),
            wage_quantizers.layer_scale(bits, limit))


class WageLayer(object):

    """Mixin of the WAGE layers: ``weight_bits`` (:math:`k_W`), ``alpha``
    (the fixed layer scale) and the quantized weight."""

    def _quantized_W(self):
        return wage_quantizers.wage_weight(self.W, self.weight_bits,
                                           self.alpha)

    def quantized_params(self):
        """Yields ``W``, the real weight that forward quantizes."""
        yield self.W


class WageLinear(WageLayer, chainer.links.Linear):

    """:math:`y = x \\, (Q_{k_W}(W) / \\alpha)^\\top`, no bias
    (:func:`qnn.functions.wage_quantizers.wage_weight`).

    Args:
        in_size (int): Inputs.
        out_size (int): Outputs.
        weight_bits (int): :math:`k_W`, 1..32.
    """

    def __init__(self, in_size, out_size, weight_bits=2):
        initializer, self.alpha = wage_initializer(weight_bits, in_size)
        self.weight_bits = qst.check_bits(weight_bits)
        super(WageLinear, self).__init__(in_size, out_size, nobias=True,
                                         initialW=initializer)

    def forward(self, x):
        return F.linear(x, self._quantized_W())


class WageConvolution2D(WageLayer, chainer.links.Convolution2D):

    """:math:`y = (Q_{k_W}(W) / \\alpha) \\star x`, no bias, stride 1.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        ksize (int): Kernel size.
        pad (int): Zero padding on each side.
        weight_bits (int): :math:`k_W`, 1..32.
    """

    def __init__(self, in_channels, out_channels, ksize, pad=0,
                 weight_bits=2):
        initializer, self.alpha = wage_initializer(
            weight_bits, in_channels * ksize * ksize)
        self.weight_bits = qst.check_bits(weight_bits)
        super(WageConvolution2D, self).__init__(
            in_channels, out_channels, ksize, pad=pad, nobias=True,
            initialW=initializer)

    def forward(self, x):
        return quantized_convolution_2d(x, self._quantized_W(), pad=self.pad,
                                        quantization=_PLAIN)

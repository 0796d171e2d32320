"""Binarized multi-layer perceptron for MNIST (Hubara et al. 2016)."""
import chainer_compat  # NOQA: F401  (first: Chainer on NumPy 2)
import chainer
import chainer.links as L

from link_quantized_linear import QuantizedLinear
import qst


class MnistMLP(chainer.Chain):

    """Binarized MLP with batch normalization.

    .. math::

        h_1 &= q(\\mathrm{BN}_1(x \\, q(W_1)^\\top)) \\\\
        h_2 &= q(\\mathrm{BN}_2(h_1 q(W_2)^\\top)) \\\\
        y   &= \\mathrm{BN}_3(h_2 q(W_3)^\\top)

    with :math:`q` a quantizer of :mod:`qst` (by default sign:
    :func:`qst.qst` on activations,
    :class:`link_quantized_linear.QuantizedLinear` on weights). The input
    pixels (in [0, 1]) are not quantized. The linear layers have no bias: the
    batch normalization that follows each one would cancel it.

    Args:
        n_in (int or None): Input size (``None``: infer on first call).
        n_units (int): Units of each of the two hidden layers.
        n_out (int): Number of classes; the output are logits.
        weight_bits (int): Bit width of the weights (32: full precision).
        activation_bits (int): Bit width of the hidden activations.
        quantizer (str): ``'linear'`` or ``'log'``, for both.
        stochastic (bool): Stochastic quantization of both in training.
        gradient_bits (int or None): Bit width of the weight gradients
            (``None``: not quantized).
        error_bits (int or None): Bit width of the errors propagated
            between layers (``None``: not quantized).
    """

    def __init__(self, n_in=784, n_units=1000, n_out=10, weight_bits=1,
                 activation_bits=1, quantizer='linear', stochastic=False,
                 gradient_bits=None, error_bits=None):
        super(MnistMLP, self).__init__()
        self.activation_bits = qst.check_bits(activation_bits)
        self.quantizer = qst.check_quantizer(quantizer)
        self.stochastic = bool(stochastic)

        def linear(n_in, n_out):
            return QuantizedLinear(
                n_in, n_out, nobias=True, bits=weight_bits,
                quantizer=quantizer, stochastic=stochastic,
                gradient_bits=gradient_bits, error_bits=error_bits)

        with self.init_scope():
            self.l1 = linear(n_in, n_units)
            self.b1 = L.BatchNormalization(n_units)
            self.l2 = linear(n_units, n_units)
            self.b2 = L.BatchNormalization(n_units)
            self.l3 = linear(n_units, n_out)
            self.b3 = L.BatchNormalization(n_out)

    def _activation(self, h):
        return qst.qst(h, self.activation_bits, self.quantizer,
                       self.stochastic)

    def forward(self, x):
        h = self._activation(self.b1(self.l1(x)))
        h = self._activation(self.b2(self.l2(h)))
        return self.b3(self.l3(h))

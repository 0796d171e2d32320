"""Binarized multi-layer perceptron for MNIST (Hubara et al. 2016)."""
import chainer
import chainer.links as L

from link_quantized_linear import QuantizedLinear
from qst import qst


class MnistMLP(chainer.Chain):

    """Binarized MLP with batch normalization.

    .. math::

        h_1 &= q(\\mathrm{BN}_1(x \\, q(W_1)^\\top)) \\\\
        h_2 &= q(\\mathrm{BN}_2(h_1 q(W_2)^\\top)) \\\\
        y   &= \\mathrm{BN}_3(h_2 q(W_3)^\\top)

    with :math:`q` = sign (:func:`qst.qst` on activations,
    :class:`link_quantized_linear.QuantizedLinear` on weights). The input
    pixels (in [0, 1]) are not binarized. The linear layers have no bias: the
    batch normalization that follows each one would cancel it.

    Args:
        n_in (int or None): Input size (``None``: infer on first call).
        n_units (int): Units of each of the two hidden layers.
        n_out (int): Number of classes; the output are logits.
    """

    def __init__(self, n_in=784, n_units=1000, n_out=10):
        super(MnistMLP, self).__init__()
        with self.init_scope():
            self.l1 = QuantizedLinear(n_in, n_units, nobias=True)
            self.b1 = L.BatchNormalization(n_units)
            self.l2 = QuantizedLinear(n_units, n_units, nobias=True)
            self.b2 = L.BatchNormalization(n_units)
            self.l3 = QuantizedLinear(n_units, n_out, nobias=True)
            self.b3 = L.BatchNormalization(n_out)

    def forward(self, x):
        h = qst(self.b1(self.l1(x)))
        h = qst(self.b2(self.l2(h)))
        return self.b3(self.l3(h))

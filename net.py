"""Binarized multi-layer perceptron for MNIST (Hubara et al. 2016)."""
import chainer_compat  # NOQA: F401  (first: Chainer on NumPy 2)
import chainer
import chainer.functions as F
import chainer.links as L

from link_quantized_linear import QuantizedLinear
from link_shift_batch_normalization import ShiftBatchNormalization
import qst

BATCH_NORMALIZATIONS = ('standard', 'shift')


class MnistMLP(chainer.Chain):

    """Binarized MLP with batch normalization.

    With the defaults (two hidden layers, no dropout):

    .. math::

        h_1 &= q(\\mathrm{BN}_1(x \\, q(W_1)^\\top)) \\\\
        h_2 &= q(\\mathrm{BN}_2(h_1 q(W_2)^\\top)) \\\\
        y   &= \\mathrm{BN}_3(h_2 q(W_3)^\\top)

    and in general, with :math:`L` = ``n_layers`` hidden layers,
    :math:`h_0 = x` and :math:`D_p` dropout with ratio :math:`p` (training
    only, kept values scaled by :math:`1 / (1 - p)`):

    .. math::

        h_i &= q(\\mathrm{BN}_i(D_{p_i}(h_{i-1}) \\, q(W_i)^\\top)),
            \\quad i = 1 \\dots L \\\\
        y   &= \\mathrm{BN}_{L+1}(D_{p_{L+1}}(h_L) \\, q(W_{L+1})^\\top)

    with :math:`p_1` = ``input_dropout`` and the others ``hidden_dropout``:
    dropout acts on the input of every linear layer, i.e. on the pixels and
    on the *quantized* hidden activations, after BN and the sign, as in the
    Theano BinaryNet MLP (a dropped binary unit is 0, a kept one
    :math:`\\pm 1/(1 - p)`). A ratio of 0 skips dropout altogether, so the
    default network computes (and draws random numbers) as before.

    Here :math:`q` is a quantizer of :mod:`qst` (by default sign:
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
        n_layers (int): Number of hidden layers (links ``l1`` ... and
            ``b1`` ..., one more of each for the output).
        input_dropout (float): Dropout ratio of the input, in [0, 1).
        hidden_dropout (float): Dropout ratio of the quantized hidden
            activations, in [0, 1).
        bn (str): ``'standard'``: :class:`chainer.links.BatchNormalization`;
            ``'shift'``: the shift-based batch normalization of
            :mod:`link_shift_batch_normalization` (scale rounded to a power
            of two).
        bn_eps (float): :math:`\\epsilon` of every batch normalization.
        bn_decay (float): Decay of the running statistics of every batch
            normalization, :math:`\\bar{\\mu} \\leftarrow d \\bar{\\mu} +
            (1 - d) \\mu`. Lasagne's (and Torch's) momentum
            :math:`\\alpha` is :math:`1 - d`: the Theano recipe's
            ``alpha=0.1`` is ``bn_decay=0.9``.
    """

    def __init__(self, n_in=784, n_units=1000, n_out=10, weight_bits=1,
                 activation_bits=1, quantizer='linear', stochastic=False,
                 gradient_bits=None, error_bits=None, n_layers=2,
                 input_dropout=0.0, hidden_dropout=0.0, bn='standard',
                 bn_eps=2e-5, bn_decay=0.9):
        super(MnistMLP, self).__init__()
        self.activation_bits = qst.check_bits(activation_bits)
        self.quantizer = qst.check_quantizer(quantizer)
        self.stochastic = bool(stochastic)
        if int(n_layers) != n_layers or n_layers < 1:
            raise ValueError('n_layers must be a positive integer, got '
                             '{!r}'.format(n_layers))
        self.n_layers = int(n_layers)
        for name, ratio in (('input_dropout', input_dropout),
                            ('hidden_dropout', hidden_dropout)):
            if not 0 <= ratio < 1:
                raise ValueError('{} must be in [0, 1), got {!r}'.format(
                    name, ratio))
        self.input_dropout = float(input_dropout)
        self.hidden_dropout = float(hidden_dropout)
        if bn not in BATCH_NORMALIZATIONS:
            raise ValueError('bn must be one of {}, got {!r}'.format(
                ', '.join(BATCH_NORMALIZATIONS), bn))
        if not bn_eps > 0:
            raise ValueError('bn_eps must be positive, got {!r}'.format(
                bn_eps))
        if not 0 <= bn_decay < 1:
            raise ValueError('bn_decay must be in [0, 1), got {!r}'.format(
                bn_decay))
        self.bn = bn

        def linear(n_in, n_out):
            return QuantizedLinear(
                n_in, n_out, nobias=True, bits=weight_bits,
                quantizer=quantizer, stochastic=stochastic,
                gradient_bits=gradient_bits, error_bits=error_bits)

        def normalization(size):
            if bn == 'shift':
                return ShiftBatchNormalization(size, decay=bn_decay,
                                               eps=bn_eps)
            return L.BatchNormalization(size, decay=bn_decay, eps=bn_eps)

        # made in this order (l1, b1, l2, b2, ...), which fixes the random
        # draws of the initial weights for a given seed
        sizes = [n_in] + [n_units] * self.n_layers + [n_out]
        with self.init_scope():
            for i in range(1, self.n_layers + 2):
                setattr(self, 'l{}'.format(i), linear(sizes[i - 1], sizes[i]))
                setattr(self, 'b{}'.format(i), normalization(sizes[i]))

    def _activation(self, h):
        return qst.qst(h, self.activation_bits, self.quantizer,
                       self.stochastic)

    def _dropout(self, h, ratio):
        # F.dropout is the identity outside training; ratio 0 is skipped so
        # that no random numbers are drawn
        return F.dropout(h, ratio) if ratio else h

    def forward(self, x):
        h = self._dropout(x, self.input_dropout)
        for i in range(1, self.n_layers + 1):
            h = self['l{}'.format(i)](h)
            h = self._activation(self['b{}'.format(i)](h))
            h = self._dropout(h, self.hidden_dropout)
        i = self.n_layers + 1
        return self['b{}'.format(i)](self['l{}'.format(i)](h))

"""Binarized networks for MNIST (Hubara et al. 2016): an MLP and a ConvNet."""
from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import numpy

import chainer
import chainer.functions as F
import chainer.links as L
from chainer.utils import conv

from link_quantized_linear import QuantizedLinear
from qnn.functions.batch_normalization_sign import DEFAULT_EPS
from qnn.functions.batch_normalization_sign import batch_normalization_sign
from qnn.functions.max_pooling_2x2 import max_pooling_2x2
from qnn.functions.wage_quantizers import wage_activation
from qnn.functions.wage_quantizers import wage_error
from qnn.links.quantized_convolution_2d import QuantizedConvolution2D
from qnn.links.shift_batch_normalization import ShiftBatchNormalization
from qnn.links.wage_layers import WageConvolution2D
from qnn.links.wage_layers import WageLinear
import qst

BATCH_NORMALIZATIONS = ('standard', 'shift')
# initializers of the quantized weights, by name (train_mnist.py
# --weight-init): Chainer's default for Linear and Convolution2D, or
# BinaryNet's (its Theano and Torch7 codes draw every binary weight from
# U(-1, 1), the clipping range, so that few signs flip in the first steps)
WEIGHT_INITS = ('lecun-normal', 'uniform')


def normalized_activation(network, bn, h):
    """``network._activation(bn(h))``: in training, on NumPy arrays, with
    Chainer's BatchNormalization (its default axes) and the deterministic
    sign, on a C-contiguous ``h``, the two as one node with the same values
    and gradients, bit for bit
    (:func:`qnn.functions.batch_normalization_sign.batch_normalization_sign`;
    the link's ``forward`` is not called then: it reads its ``gamma``,
    ``beta``, ``eps``, ``decay``, ``avg_mean`` and ``avg_var``)."""
    q = network.quantization
    if (chainer.config.train and type(bn) is L.BatchNormalization
            and bn.axis is None and q.activation_bits == 1
            and q.quantizer == 'linear' and not q.stochastic_activations
            and isinstance(chainer.as_array(h), numpy.ndarray)
            and chainer.as_array(h).flags.c_contiguous
            and h.dtype == bn.gamma.dtype):
        return batch_normalization_sign(h, bn.gamma, bn.beta, bn.eps,
                                        bn.avg_mean, bn.avg_var, bn.decay)
    return network._activation(bn(h))


def weight_initializer(name):
    """The initializer of the quantized weights called ``name`` (one of
    :data:`WEIGHT_INITS`): ``'lecun-normal'``, :math:`N(0, 1/\\text{fan_in})`
    (``None``: the links' default); ``'uniform'``, :math:`U(-1, 1)`."""
    if name not in WEIGHT_INITS:
        raise ValueError('weight_init must be one of {}, got {!r}'.format(
            ', '.join(WEIGHT_INITS), name))
    return chainer.initializers.Uniform(1.0) if name == 'uniform' else None


class QuantizedNetwork(chainer.Chain):

    """What both networks share: their :class:`qst.Quantization`
    (``quantization``) and the quantizer of their hidden activations."""

    def __init__(self, quantization=None):
        super(QuantizedNetwork, self).__init__()
        self.quantization = qst.Quantization.checked(quantization)

    def _activation(self, h):
        q = self.quantization
        return qst.qst(h, q.activation_bits, q.quantizer,
                       q.stochastic_activations)


class MnistMLP(QuantizedNetwork):

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
        quantization (qst.Quantization): The bits of the weights and the
            hidden activations, the quantizer, stochastic rounding (of the
            activations: :func:`qst.qst` with ``stochastic=True``, the
            stochastic binarization of the paper's Torch7 MNIST recipe; of
            the weights: a weight :math:`w` binarizes to +1 with probability
            :math:`(w + 1) / 2`, nearly 1/2 for the small initial weights,
            so it trains only with large steps, e.g. Glorot step sizes), the
            bits of the weight gradients and of the errors propagated
            between layers. Default: the binarized network.
        n_layers (int): Number of hidden layers (links ``l1`` ... and
            ``b1`` ..., one more of each for the output).
        input_dropout (float): Dropout ratio of the input, in [0, 1).
        hidden_dropout (float): Dropout ratio of the quantized hidden
            activations, in [0, 1).
        bn (str): ``'standard'``: :class:`chainer.links.BatchNormalization`;
            ``'shift'``: the shift-based batch normalization of
            :mod:`qnn.links.shift_batch_normalization` (scale rounded to a
            power of two) on the hidden layers, the output's staying standard
            as in BinaryNet's Torch7 models.
        bn_eps (float): :math:`\\epsilon` of every batch normalization.
        bn_decay (float): Decay of the running statistics of every batch
            normalization, :math:`\\bar{\\mu} \\leftarrow d \\bar{\\mu} +
            (1 - d) \\mu`. Lasagne's (and Torch's) momentum
            :math:`\\alpha` is :math:`1 - d`: the Theano recipe's
            ``alpha=0.1`` is ``bn_decay=0.9``.
        weight_init (str): Initializer of the quantized weights, one of
            :data:`WEIGHT_INITS` (:func:`weight_initializer`).
    """

    def __init__(self, n_in=784, n_units=1000, n_out=10, quantization=None,
                 n_layers=2, input_dropout=0.0, hidden_dropout=0.0,
                 bn='standard', bn_eps=DEFAULT_EPS, bn_decay=0.9,
                 weight_init='lecun-normal'):
        super(MnistMLP, self).__init__(quantization)
        initialW = weight_initializer(weight_init)
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
            return QuantizedLinear(n_in, n_out, nobias=True,
                                   initialW=initialW,
                                   quantization=self.quantization)

        def normalization(size, hidden):
            # the output's BN stays standard: its logits are not binarized
            # (BinaryNet's Torch7 models end in nn.BatchNormalization too)
            if bn == 'shift' and hidden:
                return ShiftBatchNormalization(size, decay=bn_decay,
                                               eps=bn_eps)
            return L.BatchNormalization(size, decay=bn_decay, eps=bn_eps)

        # made in this order (l1, b1, l2, b2, ...), which fixes the random
        # draws of the initial weights for a given seed
        sizes = [n_in] + [n_units] * self.n_layers + [n_out]
        with self.init_scope():
            for i in range(1, self.n_layers + 2):
                setattr(self, 'l{}'.format(i), linear(sizes[i - 1], sizes[i]))
                setattr(self, 'b{}'.format(i),
                        normalization(sizes[i], i <= self.n_layers))

    def _dropout(self, h, ratio):
        # F.dropout is the identity outside training; ratio 0 is skipped so
        # that no random numbers are drawn
        return F.dropout(h, ratio) if ratio else h

    def forward(self, x):
        h = self._dropout(x, self.input_dropout)
        for i in range(1, self.n_layers + 1):
            h = self['l{}'.format(i)](h)
            h = normalized_activation(self, self['b{}'.format(i)], h)
            h = self._dropout(h, self.hidden_dropout)
        i = self.n_layers + 1
        return self['b{}'.format(i)](self['l{}'.format(i)](h))


# Architectures of BinaryConvNet: channels of the 3x3 convolutions of each
# stage (each stage ends in 2x2 max pooling), units of the hidden dense
# layers, and the image shape a flat input is reshaped to.
ARCHITECTURES = {
    # CPU-sized, for 28x28x1 MNIST: 16C3-MP2-32C3-MP2-64C3-MP2-2x512FC-10.
    # A CPU convolution (im2col and a matrix product) costs about the size
    # of its im2col buffer, so there is one convolution per stage and none
    # wider than 16 channels at 28x28: 2x64C3 there alone took several
    # seconds per batch of 100 on 2 cores with Chainer's convolution (see
    # docs/convolution.md).
    'small': {'conv': ((16,), (32,), (64,)), 'fc': (512, 512),
              'in_shape': (1, 28, 28)},
    # the small network at twice its width: 32C3-MP2-64C3-MP2-128C3-MP2-
    # 2x1024FC-10. The small one underfits (training accuracy 0.99 on MNIST,
    # 0.90 on Fashion-MNIST after 20 epochs); its step costs 2.3 times as much.
    'wide': {'conv': ((32,), (64,), (128,)), 'fc': (1024, 1024),
             'in_shape': (1, 28, 28)},
    # the paper's CIFAR-10 network (BinaryNet, Courbariaux, Hubara et al.
    # 2016): 2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC-10, 32x32x3
    'paper': {'conv': ((128, 128), (256, 256), (512, 512)),
              'fc': (1024, 1024), 'in_shape': (3, 32, 32)},
}


class BinaryConvNet(QuantizedNetwork):

    """Binarized ConvNet with batch normalization (the paper's CIFAR-10 net).

    Each stage is a few 3x3 convolutions (padding 1, stride 1) followed by
    2x2 max pooling with stride 2 (Chainer's default ``cover_all``: an odd
    size rounds up, 7 to 4); then come the hidden dense layers and the
    output layer:

    .. math::

        h &\\leftarrow q(\\mathrm{BN}(q(W) \\star h))
            \\quad \\text{(a convolution inside a stage)} \\\\
        h &\\leftarrow q(\\mathrm{BN}(\\mathrm{MP}(q(W) \\star h)))
            \\quad \\text{(the last convolution of a stage)} \\\\
        h &\\leftarrow q(\\mathrm{BN}(h \\, q(W)^\\top))
            \\quad \\text{(a hidden dense layer)} \\\\
        y &= \\mathrm{BN}(h \\, q(W)^\\top)

    with :math:`q` a quantizer of :mod:`qst` (by default sign), as in
    :class:`MnistMLP`. Max pooling comes after the convolution and before
    batch normalization and the sign, as in the paper (BinaryNet): pooling
    binarized values would mostly give +1 (the maximum of a 2x2 window of
    +-1 is -1 only when all four are -1). The input of the first
    convolution (the pixels) is not binarized; its weights are. The layers
    have no bias (the batch normalization after each cancels it); the
    output is logits, batch-normalized as in the paper.

    Args:
        n_out (int): Number of classes.
        arch (str or dict): A key of :data:`ARCHITECTURES` (``'small'``,
            the default, and ``'wide'``, twice its width, for 28x28x1
            MNIST; ``'paper'``, the paper's
            CIFAR-10 network for 32x32x3), or a dict like their values:
            ``conv``, a tuple of stages, each a tuple of output channels;
            ``fc``, a tuple of hidden units; ``in_shape``, (channels,
            height, width).
        in_shape (tuple or None): Shape of one image, to which a 2-D input
            ``(n, c * h * w)`` (flat MNIST) is reshaped; ``None``: the
            architecture's. A 4-D input is used as it is.
        quantization, weight_init: As in :class:`MnistMLP`.
    """

    def __init__(self, n_out=10, arch='small', in_shape=None,
                 quantization=None, weight_init='lecun-normal'):
        super(BinaryConvNet, self).__init__(quantization)
        if not isinstance(arch, dict):
            if arch not in ARCHITECTURES:
                raise ValueError('arch={!r}: must be one of {} or a dict'
                                 .format(arch, ', '.join(ARCHITECTURES)))
            arch = ARCHITECTURES[arch]
        self.in_shape = tuple(in_shape or arch['in_shape'])
        options = {'nobias': True, 'initialW': weight_initializer(weight_init),
                   'quantization': self.quantization}
        # (convolution or dense layer, its BN, pool after it) in order
        self._blocks = []
        # every input size is known from in_shape, so that the weights exist
        # before the first forward pass (step_sizes.scale_step_sizes needs
        # their shapes)
        channels_in, height, width = self.in_shape
        with self.init_scope():
            for i, stage in enumerate(arch['conv'], 1):
                for j, channels in enumerate(stage, 1):
                    name = 'conv{}_{}'.format(i, j)
                    setattr(self, name, QuantizedConvolution2D(
                        channels_in, channels, 3, pad=1, **options))
                    setattr(self, 'bn' + name[4:], L.BatchNormalization(
                        channels))
                    self._blocks.append(
                        (name, 'bn' + name[4:], j == len(stage)))
                    channels_in = channels
                height, width = (
                    conv.get_conv_outsize(size, 2, 2, 0, cover_all=True)
                    for size in (height, width))
            size_in = channels_in * height * width
            units = tuple(arch['fc']) + (n_out,)
            for i, n in enumerate(units, 1):
                name = 'fc{}'.format(i)
                setattr(self, name, QuantizedLinear(size_in, n, **options))
                size_in = n
                setattr(self, 'bn_' + name, L.BatchNormalization(n))
                self._blocks.append((name, 'bn_' + name, False))

    def forward(self, x):
        if x.ndim == 2:
            x = F.reshape(x, (len(x),) + self.in_shape)
        h = x
        for k, (layer, bn, pool) in enumerate(self._blocks):
            h = self[layer](h)
            if pool:
                h = max_pooling_2x2(h)
            if k < len(self._blocks) - 1:  # the output stays real: logits
                h = normalized_activation(self, self[bn], h)
            else:
                h = self[bn](h)
        return h


def largest_weight(in_shape, n_out, n_units=None, arch=None):
    """Elements of the largest weight of the network on images of
    ``in_shape`` with ``n_out`` classes: :class:`MnistMLP` of ``n_units``
    units (``arch`` None) or :class:`BinaryConvNet` ``arch``, from the
    sizes alone (nothing is built); what a reader of its snapshots may
    expect at most."""
    channels, height, width = in_shape
    if arch is None:
        return n_units * max(channels * height * width, n_units, n_out)
    arch = arch if isinstance(arch, dict) else ARCHITECTURES[arch]
    largest = 0
    for stage in arch['conv']:
        for out in stage:
            largest = max(largest, out * channels * 9)
            channels = out
        height, width = (conv.get_conv_outsize(size, 2, 2, 0, cover_all=True)
                         for size in (height, width))
    size_in = channels * height * width
    for n in tuple(arch['fc']) + (n_out,):
        largest = max(largest, size_in * n)
        size_in = n
    return largest


# WAGE's LeNet-5s (Wu et al. 2018), no bias, no batch normalization: the
# 5x5 convolutions (channels, zero padding) of each stage, each followed by
# 2x2 max pooling, and the hidden dense layers' units
WAGE_NETWORKS = {
    # the seed logs' Keras LeNet-5: 6C5-MP2-8C5-MP2-120FC-84FC-10, valid
    # convolutions (28 -> 24 -> 12 -> 8 -> 4: 128 features), 27,630 weights
    'seed': {'conv': ((6, 0), (8, 0)), 'fc': (120, 84)},
    # WAGE's MNIST LeNet-5: 32C5-MP2-64C5-MP2-512FC-10, valid convolutions
    # (1,024 features), 581,408 weights (its log's "Total")
    'wage': {'conv': ((32, 0), (64, 0)), 'fc': (512,)},
}


class WageLeNet5(QuantizedNetwork):

    """WAGE's LeNet-5: every layer's weights, activations and errors
    quantized (:mod:`qnn.functions.wage_quantizers`), no batch
    normalization, no bias; the layers' fixed power-of-two scales
    :math:`\\alpha` (:mod:`qnn.links.wage_layers`) keep the activations in
    range instead.

    .. math::

        h &\\leftarrow Q_A(x) \\\\
        h &\\leftarrow Q_A(E(\\mathrm{ReLU}(\\mathrm{MP}(
            (Q_W(W)/\\alpha) \\star h))))
            \\quad \\text{(each convolution)} \\\\
        h &\\leftarrow Q_A(E(\\mathrm{ReLU}(h \\, (Q_W(W)/\\alpha)^\\top)))
            \\quad \\text{(each hidden dense layer)} \\\\
        y &= E(h \\, (Q_W(W)/\\alpha)^\\top)

    :math:`E` is the identity forward and quantizes the error backward
    (:func:`qnn.functions.wage_quantizers.wage_error`). The gradients are
    quantized by the optimizer, :class:`qnn.optimizers.wage_sgd.WageSGD`.

    Args:
        n_out (int): Number of classes.
        size (str): A key of :data:`WAGE_NETWORKS`.
        in_shape (tuple): Shape of one image (a flat input is reshaped).
        quantization (qst.Quantization): ``weight_bits`` (:math:`k_W`),
            ``activation_bits`` (:math:`k_A`) and ``error_bits``
            (:math:`k_E`); its other fields are not used.
    """

    def __init__(self, n_out=10, size='seed', in_shape=(1, 28, 28),
                 quantization=None):
        super(WageLeNet5, self).__init__(quantization)
        if size not in WAGE_NETWORKS:
            raise ValueError('size={!r}: must be one of {}'.format(
                size, ', '.join(WAGE_NETWORKS)))
        self.size = size
        self.in_shape = tuple(in_shape)
        bits = self.quantization.weight_bits
        channels, height, width = self.in_shape
        self._convs, self._fcs = [], []
        with self.init_scope():
            for i, (out, pad) in enumerate(WAGE_NETWORKS[size]['conv'], 1):
                name = 'conv{}'.format(i)
                setattr(self, name, WageConvolution2D(
                    channels, out, 5, pad=pad, weight_bits=bits))
                self._convs.append(name)
                channels = out
                height, width = ((s + 2 * pad - 4) // 2
                                 for s in (height, width))
            size_in = channels * height * width
            for i, n in enumerate(WAGE_NETWORKS[size]['fc'] + (n_out,), 1):
                name = 'fc{}'.format(i)
                setattr(self, name, WageLinear(size_in, n, weight_bits=bits))
                self._fcs.append(name)
                size_in = n

    def _activation(self, h):
        q = self.quantization
        h = wage_error(F.relu(h), q.error_bits)
        return wage_activation(h, q.activation_bits)

    def forward(self, x):
        if x.ndim == 2:
            x = F.reshape(x, (len(x),) + self.in_shape)
        h = wage_activation(x, self.quantization.activation_bits)
        for name in self._convs:
            h = self._activation(max_pooling_2x2(self[name](h)))
        for name in self._fcs[:-1]:
            h = self._activation(self[name](h))
        return wage_error(self[self._fcs[-1]](h), self.quantization.error_bits)

"""2-D convolutional layer with a quantized filter (real-valued W kept)."""
from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.links
from chainer import memory_layouts

from qnn.functions.quantized_convolution_2d import quantized_convolution_2d
import qst


class QuantizedConvolution2D(chainer.links.Convolution2D):

    """__init__(self, in_channels, out_channels, ksize=None, stride=1, pad=0, \
nobias=False, initialW=None, initial_bias=None, bits=1, quantizer='linear', \
stochastic=False, gradient_bits=None, error_bits=None, *, dilate=1, groups=1)

    Convolutional layer whose filter is quantized in the forward pass.

    A drop-in replacement for :class:`chainer.links.Convolution2D` (same
    arguments, lazy initialization with ``in_channels=None`` or the
    two-argument form ``QuantizedConvolution2D(out_channels, ksize)``, same
    initializers) that computes
    :func:`qnn.functions.quantized_convolution_2d.quantized_convolution_2d`:

    .. math:: y = q(W) \\star x + b

    The parameter ``W`` stays real-valued; the optimizer updates it with the
    straight-through gradient and :class:`weight_clip.WeightClip` keeps it in
    [-1, 1] (it clips what :meth:`quantized_params` yields). Only ``W`` is
    quantized; ``b`` (if any) stays real.

    Args:
        in_channels (int or None): Input channels; ``None`` defers
            initialization to the first forward pass.
        out_channels (int): Output channels.
        ksize (int or pair of ints): Filter size.
        stride (int or pair of ints): Stride of filter applications.
        pad (int or pair of ints): Spatial padding width.
        nobias (bool): If ``True``, no bias.
        initialW: Initializer of ``W`` (default: :math:`N(0, 1/\\text{fan
            in})`).
        initial_bias: Initializer of ``b`` (default: zero).
        bits (int): Bit width of the quantized filter, 1..32 (see
            :mod:`qst`; 32: clip to [-1, 1] only).
        quantizer (str): ``'linear'`` or ``'log'``.
        stochastic (bool): Quantize ``W`` stochastically in training.
        gradient_bits (int or None): Bit width of the gradient of ``W``
            (``None`` or 32: not quantized).
        error_bits (int or None): Bit width of the error propagated to the
            input (``None`` or 32: not quantized).
        dilate (int or pair of ints): Dilation factor of filter applications.
        groups (int): Number of groups of channels.
    """

    def __init__(self, in_channels, out_channels, ksize=None, stride=1, pad=0,
                 nobias=False, initialW=None, initial_bias=None, bits=1,
                 quantizer='linear', stochastic=False, gradient_bits=None,
                 error_bits=None, **kwargs):
        # checked here, so that a bad option fails when the link is made
        self.options = qst.check_options(
            bits, quantizer, stochastic, gradient_bits, error_bits)
        super(QuantizedConvolution2D, self).__init__(
            in_channels, out_channels, ksize, stride, pad, nobias, initialW,
            initial_bias, **kwargs)

    def forward(self, x):
        """Applies the layer; see :meth:`chainer.links.Convolution2D.forward`.
        """
        x = chainer.as_variable(x)
        assert x.layout == self.x_layout
        if self.W.raw_array is None:
            _, c, _, _ = memory_layouts.get_semantic_shape(
                x, assumed_layout=self.x_layout)
            self._initialize_params(c)
        return quantized_convolution_2d(
            x, self.W, self.b, self.stride, self.pad, dilate=self.dilate,
            groups=self.groups, cudnn_fast=self.cudnn_fast, **self.options)

    def quantized_params(self):
        """Yields the real-valued parameters that forward quantizes (``W``).

        :class:`weight_clip.WeightClip` clips exactly these.
        """
        yield self.W

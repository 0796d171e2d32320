"""2-D convolutional layer with a quantized filter (real-valued W kept)."""
from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.links
from chainer import memory_layouts

from qnn.functions.quantized_convolution_2d import quantized_convolution_2d
from qnn.links.quantized_weight import QuantizedWeight


class QuantizedConvolution2D(QuantizedWeight, chainer.links.Convolution2D):

    """__init__(self, in_channels, out_channels, ksize=None, stride=1, pad=0, \
nobias=False, initialW=None, initial_bias=None, quantization=None, *, \
dilate=1, groups=1)

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
        quantization (qst.Quantization): How ``W`` and the gradients are
            quantized, as in :class:`link_quantized_linear.QuantizedLinear`.
        dilate (int or pair of ints): Dilation factor of filter applications.
        groups (int): Number of groups of channels.
    """

    def __init__(self, in_channels, out_channels, ksize=None, stride=1, pad=0,
                 nobias=False, initialW=None, initial_bias=None,
                 quantization=None, **kwargs):
        self._set_quantization(quantization)
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
            x, self.W, self.b, self.stride, self.pad,
            quantization=self.quantization, dilate=self.dilate,
            groups=self.groups, cudnn_fast=self.cudnn_fast)

"""What the links with a quantized weight share."""
import qst


class QuantizedWeight(object):

    """Mixin of a link whose weight ``W`` stays real-valued and is quantized
    in forward (:class:`link_quantized_linear.QuantizedLinear`,
    :class:`qnn.links.quantized_convolution_2d.QuantizedConvolution2D`).

    It holds the link's :class:`qst.Quantization` (``quantization``,
    checked when the link is made, before Chainer's ``__init__``, so that a
    bad setting fails at once) and says which parameters are quantized:
    those :class:`weight_clip.WeightClip` clips.
    """

    def _set_quantization(self, quantization):
        self.quantization = qst.Quantization.checked(quantization)

    def quantized_params(self):
        """Yields the real-valued parameters that forward quantizes
        (``W``); :class:`weight_clip.WeightClip` clips exactly these."""
        yield self.W

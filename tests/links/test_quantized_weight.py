"""What the quantized links share (qnn.links.quantized_weight): their
quantization, checked when made, and the parameters WeightClip clips."""
import pytest

from link_quantized_linear import QuantizedLinear
from qnn.links.quantized_convolution_2d import QuantizedConvolution2D
from qnn.links.quantized_weight import QuantizedWeight
import qst

LINKS = [lambda **kw: QuantizedLinear(4, 3, **kw),
         lambda **kw: QuantizedConvolution2D(2, 3, 3, **kw)]


@pytest.mark.parametrize('make', LINKS)
def test_the_setting_and_the_quantized_parameters(make):
    link = make()
    assert isinstance(link, QuantizedWeight)
    assert link.quantization == qst.Quantization()
    assert list(link.quantized_params()) == [link.W]
    setting = qst.Quantization(weight_bits=3, gradient_bits=8)
    assert make(quantization=setting).quantization is setting


@pytest.mark.parametrize('make', LINKS)
def test_anything_but_a_setting_is_refused_when_made(make):
    for bad in ({'weight_bits': 2}, 2, 'linear'):
        with pytest.raises(TypeError, match='qst.Quantization'):
            make(quantization=bad)

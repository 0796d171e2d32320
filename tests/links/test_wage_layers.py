import math

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

from qnn.links import wage_layers


def ref_levels(w, k):
    if k == 1:
        return numpy.where(w >= 0, 1.0, -1.0)
    s = 2.0 ** (1 - k)
    return numpy.floor(numpy.clip(w, -1 + s, 1 - s) / s + 0.5) * s


@pytest.mark.parametrize('k,fan_in,alpha', [(1, 84, 8), (2, 512, 8),
                                            (2, 25, 2), (8, 3136, 1)])
def test_scale_and_initial_range(k, fan_in, alpha):
    numpy.random.seed(0)
    link = wage_layers.WageLinear(fan_in, 50, weight_bits=k)
    limit = math.sqrt(3.0 / fan_in)
    assert link.alpha == alpha == max(
        1, 2.0 ** round(math.log2(1.5 * 2.0 ** (1 - k) / limit)))
    width = max(limit, 1.5 * 2.0 ** (1 - k))
    assert numpy.abs(link.W.array).max() <= width
    assert numpy.abs(link.W.array).max() > 0.9 * width


@pytest.mark.parametrize('k', [1, 2])
def test_linear_forward_and_backward(k):
    numpy.random.seed(1)
    link = wage_layers.WageLinear(6, 4, weight_bits=k)
    x = numpy.random.RandomState(2).standard_normal((3, 6)).astype('f')
    y = link(x)
    wq = ref_levels(link.W.array, k) / link.alpha
    numpy.testing.assert_allclose(y.array, x.dot(wq.T), rtol=1e-5,
                                  atol=1e-6)
    g = numpy.random.RandomState(5).standard_normal(y.shape).astype('f')
    y.grad = g
    link.cleargrads()
    y.backward()
    # straight through the quantizer: the gradient of x W^T
    numpy.testing.assert_allclose(link.W.grad, g.T.dot(x), rtol=1e-5)
    assert link.b is None


def test_convolution_forward():
    numpy.random.seed(3)
    link = wage_layers.WageConvolution2D(2, 3, 5, pad=2, weight_bits=2)
    assert link.alpha == wage_layers.wage_initializer(2, 50)[1]
    x = numpy.random.RandomState(4).standard_normal((2, 2, 8, 8)).astype('f')
    y = link(x)
    wq = (ref_levels(link.W.array, 2) / link.alpha).astype('f')
    expected = chainer.functions.convolution_2d(x, wq, pad=2)
    assert y.shape == (2, 3, 8, 8)
    numpy.testing.assert_allclose(y.array, expected.array, rtol=1e-5,
                                  atol=1e-6)
    assert list(link.quantized_params()) == [link.W]

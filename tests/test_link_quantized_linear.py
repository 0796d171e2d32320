import unittest

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.links as L
from chainer import testing

from link_quantized_linear import QuantizedLinear
from qst import Quantization

from helpers import BACKENDS


def sign(w):
    return numpy.where(w >= 0, 1, -1).astype(w.dtype)


@testing.parameterize(*testing.product({
    'in_size': [5, None],
    'nobias': [True, False],
}))
@testing.inject_backend_tests(None, BACKENDS)
class TestQuantizedLinear(unittest.TestCase):

    def setUp(self):
        self.link = QuantizedLinear(self.in_size, 3, nobias=self.nobias,
                                    initial_bias=0.5)
        self.x = numpy.random.uniform(-1, 1, (4, 5)).astype(numpy.float32)

    def test_forward_equals_quantized_reference(self, backend_config):
        self.link.to_device(backend_config.device)
        y = self.link(backend_config.get_array(self.x))
        W = chainer.backend.CpuDevice().send(self.link.W.array)
        expected = self.x.dot(sign(W).T)
        if not self.nobias:
            expected += 0.5
        numpy.testing.assert_allclose(
            chainer.backend.CpuDevice().send(y.array), expected,
            rtol=1e-5, atol=1e-5)

    def test_weight_stays_real(self, backend_config):
        self.link.to_device(backend_config.device)
        self.link(backend_config.get_array(self.x))
        W = chainer.backend.CpuDevice().send(self.link.W.array)
        assert W.shape == (3, 5)
        assert not numpy.isin(W, [-1.0, 1.0]).all()

    def test_backward_reaches_real_weight(self, backend_config):
        self.link.to_device(backend_config.device)
        self.link.cleargrads()
        y = self.link(backend_config.get_array(self.x))
        chainer.functions.sum(y).backward()
        gW = chainer.backend.CpuDevice().send(self.link.W.grad)
        numpy.testing.assert_allclose(
            gW, numpy.ones((4, 3), 'f').T.dot(self.x), rtol=1e-5, atol=1e-5)


class TestQuantizedLinearLink(unittest.TestCase):

    def test_lazy_init(self):
        link = QuantizedLinear(3)
        assert link.W.array is None
        link(numpy.zeros((2, 7), 'f'))
        assert link.W.shape == (3, 7)

    def test_lazy_init_flattens(self):
        link = QuantizedLinear(None, 3)
        link(numpy.zeros((2, 1, 4, 4), 'f'))
        assert link.W.shape == (3, 16)

    def test_is_a_linear_with_same_params(self):
        link = QuantizedLinear(5, 3)
        assert isinstance(link, L.Linear)
        assert sorted(name for name, _ in link.namedparams()) == ['/W', '/b']
        assert [p.name for p in link.quantized_params()] == ['W']

    def test_initializers(self):
        W = numpy.arange(15, dtype='f').reshape(3, 5) - 7
        link = QuantizedLinear(5, 3, initialW=W, initial_bias=2)
        numpy.testing.assert_array_equal(link.W.array, W)
        numpy.testing.assert_array_equal(link.b.array, [2, 2, 2])

    def test_default_init_is_lecun_normal(self):
        numpy.random.seed(0)
        link = QuantizedLinear(2000, 100)
        std = link.W.array.std()
        assert abs(std - (1 / 2000) ** 0.5) < 0.05 * (1 / 2000) ** 0.5

    def test_quantization_checked_when_made(self):
        with pytest.raises(TypeError):
            QuantizedLinear(5, 3, quantization=(2, 2))
        with pytest.raises(TypeError):
            QuantizedLinear(5, 3, bits=2)
        link = QuantizedLinear(5, 3, quantization=Quantization(3))
        assert link.quantization.weight_bits == 3

    def test_serialization_round_trip(self):
        import io
        link = QuantizedLinear(5, 3)
        buf = io.BytesIO()
        chainer.serializers.save_npz(buf, link)
        buf.seek(0)
        other = QuantizedLinear(5, 3)
        chainer.serializers.load_npz(buf, other)
        numpy.testing.assert_array_equal(other.W.array, link.W.array)


testing.run_module(__name__, __file__)

import io
import unittest

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.functions as F
import chainer.links as L
from chainer import testing

from qnn.links.quantized_convolution_2d import QuantizedConvolution2D
from qst import Quantization
from weight_clip import WeightClip

from helpers import BACKENDS, quantize_reference, sign_reference

X_SHAPE = (2, 3, 6, 5)
OUT_CHANNELS = 4
KSIZE = 3


@testing.parameterize(*testing.product({
    'in_channels': [X_SHAPE[1], None],
    'nobias': [True, False],
}))
@testing.inject_backend_tests(None, BACKENDS)
class TestQuantizedConvolution2D(unittest.TestCase):

    bias = 0.5

    def setUp(self):
        self.link = QuantizedConvolution2D(
            self.in_channels, OUT_CHANNELS, KSIZE, stride=2, pad=1,
            nobias=self.nobias, initial_bias=self.bias)
        self.x = numpy.random.uniform(-1, 1, X_SHAPE).astype(numpy.float32)

    def expected(self):
        W = chainer.backend.CpuDevice().send(self.link.W.array)
        y = F.convolution_2d(self.x, sign_reference(W), stride=2, pad=1).array
        return y if self.nobias else y + self.bias

    def test_forward_equals_quantized_reference(self, backend_config):
        self.link.to_device(backend_config.device)
        y = self.link(backend_config.get_array(self.x))
        numpy.testing.assert_allclose(
            chainer.backend.CpuDevice().send(y.array), self.expected(),
            rtol=1e-5, atol=1e-5)

    def test_weight_stays_real(self, backend_config):
        self.link.to_device(backend_config.device)
        self.link(backend_config.get_array(self.x))
        W = chainer.backend.CpuDevice().send(self.link.W.array)
        assert W.shape == (OUT_CHANNELS, X_SHAPE[1], KSIZE, KSIZE)
        assert not numpy.isin(W, [-1.0, 1.0]).all()

    def test_backward_reaches_real_weight(self, backend_config):
        self.link.to_device(backend_config.device)
        self.link.cleargrads()
        y = self.link(backend_config.get_array(self.x))
        F.sum(y).backward()
        # the gradient of Chainer's convolution w.r.t. its weight sign(W)
        W = chainer.backend.CpuDevice().send(self.link.W.array)
        Wq = chainer.Variable(sign_reference(W))
        F.sum(F.convolution_2d(self.x, Wq, stride=2, pad=1)).backward()
        numpy.testing.assert_allclose(
            chainer.backend.CpuDevice().send(self.link.W.grad), Wq.grad,
            rtol=1e-5, atol=1e-5)


@testing.parameterize(*testing.product({
    'dtype': [numpy.float16, numpy.float32, numpy.float64],
}))
class TestQuantizedConvolution2DDtypes(unittest.TestCase):

    def test_dtype(self):
        with chainer.using_config('dtype', self.dtype):
            link = QuantizedConvolution2D(OUT_CHANNELS, KSIZE,
                                          quantization=Quantization(2))
            x = numpy.random.uniform(-1, 1, X_SHAPE).astype(self.dtype)
            y = link(x)
        assert link.W.dtype == self.dtype
        assert y.dtype == self.dtype
        expected = F.convolution_2d(
            x, quantize_reference(link.W.array, 2, 'linear'),
            link.b.array).array
        tol = 5e-3 if self.dtype == numpy.float16 else 1e-5
        numpy.testing.assert_allclose(y.array, expected, rtol=tol, atol=tol)


class TestQuantizedConvolution2DLink(unittest.TestCase):

    def test_lazy_init(self):
        link = QuantizedConvolution2D(None, OUT_CHANNELS, KSIZE)
        assert link.W.array is None
        link(numpy.zeros(X_SHAPE, 'f'))
        assert link.W.shape == (OUT_CHANNELS, X_SHAPE[1], KSIZE, KSIZE)

    def test_two_argument_form(self):
        # QuantizedConvolution2D(out_channels, ksize), like Convolution2D
        link = QuantizedConvolution2D(OUT_CHANNELS, KSIZE,
                                      quantization=Quantization(2))
        assert link.W.array is None
        y = link(numpy.zeros(X_SHAPE, 'f'))
        assert link.W.shape == (OUT_CHANNELS, X_SHAPE[1], KSIZE, KSIZE)
        assert y.shape == (X_SHAPE[0], OUT_CHANNELS, X_SHAPE[2] - KSIZE + 1,
                           X_SHAPE[3] - KSIZE + 1)
        assert link.quantization.weight_bits == 2

    def test_is_a_convolution_with_same_params(self):
        link = QuantizedConvolution2D(3, 4, 3)
        reference = L.Convolution2D(3, 4, 3)
        assert isinstance(link, L.Convolution2D)
        assert (sorted(name for name, _ in link.namedparams())
                == sorted(name for name, _ in reference.namedparams()))
        assert [p.name for p in link.quantized_params()] == ['W']

    def test_options_reach_the_function(self):
        W = numpy.linspace(-1, 1, 4 * 3 * 2 * 2, dtype='f').reshape(4, 3, 2, 2)
        x = numpy.random.uniform(-1, 1, X_SHAPE).astype('f')
        for quantizer in ('linear', 'log'):
            link = QuantizedConvolution2D(
                3, 4, 2, initialW=W, quantization=Quantization(
                    weight_bits=3, quantizer=quantizer), dilate=2)
            expected = F.convolution_2d(
                x, quantize_reference(W, 3, quantizer), link.b.array,
                dilate=2).array
            numpy.testing.assert_allclose(link(x).array, expected,
                                          rtol=1e-5, atol=1e-5)

    def test_groups(self):
        link = QuantizedConvolution2D(None, 6, 1, groups=3)
        link(numpy.zeros(X_SHAPE, 'f'))
        assert link.W.shape == (6, 1, 1, 1)

    def test_initializers(self):
        W = numpy.arange(4 * 3 * 2 * 2, dtype='f').reshape(4, 3, 2, 2) - 20
        link = QuantizedConvolution2D(3, 4, 2, initialW=W, initial_bias=2)
        numpy.testing.assert_array_equal(link.W.array, W)
        numpy.testing.assert_array_equal(link.b.array, [2, 2, 2, 2])

    def test_default_init_is_lecun_normal(self):
        numpy.random.seed(0)
        link = QuantizedConvolution2D(50, 100, 5)
        fan_in = 50 * 5 * 5
        std = link.W.array.std()
        assert abs(std - fan_in ** -0.5) < 0.05 * fan_in ** -0.5

    def test_quantization_checked_when_made(self):
        with pytest.raises(TypeError):
            QuantizedConvolution2D(3, 4, 3, quantization={'weight_bits': 2})
        with pytest.raises(TypeError):
            QuantizedConvolution2D(3, 4, 3, bits=2)
        assert QuantizedConvolution2D(3, 4, 3).quantization == Quantization()

    def test_stochastic_only_in_training(self):
        link = QuantizedConvolution2D(20, 6, 1, nobias=True,
                                      quantization=Quantization(
                                          2, stochastic_weights=True))
        x = numpy.eye(20, dtype='f')[:, :, None, None]
        deterministic = quantize_reference(link.W.array, 2, 'linear')
        with chainer.using_config('train', False):
            y = link(x).array
        numpy.testing.assert_array_equal(y[:, :, 0, 0], deterministic[
            :, :, 0, 0].T)
        y = link(x).array
        assert (y[:, :, 0, 0] != deterministic[:, :, 0, 0].T).any()

    def test_serialization_round_trip(self):
        link = QuantizedConvolution2D(3, 4, 3)
        buf = io.BytesIO()
        chainer.serializers.save_npz(buf, link)
        buf.seek(0)
        other = QuantizedConvolution2D(3, 4, 3)
        chainer.serializers.load_npz(buf, other)
        numpy.testing.assert_array_equal(other.W.array, link.W.array)


class ConvModel(chainer.Chain):

    def __init__(self):
        super(ConvModel, self).__init__()
        with self.init_scope():
            self.q = QuantizedConvolution2D(None, 4, 3)  # with a bias
            self.bn = L.BatchNormalization(4)
            self.fc = L.Linear(None, 2)  # not quantized

    def forward(self, x):
        return self.fc(self.bn(self.q(x)))


@testing.inject_backend_tests(None, BACKENDS)
class TestWeightClipOnConvolution(unittest.TestCase):

    def test_weight_clip_clips_only_the_filter(self, backend_config):
        model = ConvModel()
        model.to_device(backend_config.device)
        x = backend_config.get_array(
            numpy.random.uniform(-1, 1, X_SHAPE).astype('f'))
        model(x)  # lazy initialization
        # large enough that one SGD step moves everything past +-1
        optimizer = chainer.optimizers.SGD(lr=100.0)
        optimizer.setup(model)
        optimizer.add_hook(WeightClip(-1.0, 1.0))
        optimizer.update(lambda: F.sum(model(x) ** 2))
        cpu = chainer.backend.CpuDevice()
        params = {name: cpu.send(p.array) for name, p in model.namedparams()}
        W = params.pop('/q/W')
        assert W.min() >= -1.0 and W.max() <= 1.0
        assert numpy.isin(W, [-1.0, 1.0]).any()  # the clip did act
        assert any(numpy.abs(a).max() > 1.0 for a in params.values())

    def test_uninitialized_link_is_skipped(self, backend_config):
        link = QuantizedConvolution2D(4, 3)
        link.to_device(backend_config.device)
        optimizer = chainer.optimizers.SGD()
        optimizer.setup(link)
        WeightClip()(optimizer)  # must not fail on W.array is None
        assert link.W.array is None


testing.run_module(__name__, __file__)

import unittest

import numpy

import chainer_compat  # NOQA: F401  (first: Chainer on NumPy 2)
import chainer
import chainer.links as L
from chainer import testing

import net
from link_quantized_linear import QuantizedLinear
from backends import BACKENDS


@testing.inject_backend_tests(None, BACKENDS)
class TestMnistMLP(unittest.TestCase):

    def setUp(self):
        self.model = net.MnistMLP(n_in=20, n_units=16, n_out=4)
        self.x = numpy.random.uniform(0, 1, (8, 20)).astype('f')

    def test_output_shape_and_dtype(self, backend_config):
        self.model.to_device(backend_config.device)
        y = self.model(backend_config.get_array(self.x))
        assert y.shape == (8, 4)
        assert y.dtype == numpy.float32

    def test_hidden_activations_are_binary(self, backend_config):
        self.model.to_device(backend_config.device)
        seen = []
        original = self.model.l2.forward

        def spy(h, *args, **kwargs):
            seen.append(chainer.backend.CpuDevice().send(
                chainer.as_array(h)))
            return original(h, *args, **kwargs)

        self.model.l2.forward = spy
        self.model(backend_config.get_array(self.x))
        assert set(numpy.unique(seen[0])) == {-1.0, 1.0}

    def test_train_and_test_modes(self, backend_config):
        self.model.to_device(backend_config.device)
        x = backend_config.get_array(self.x)
        cpu = chainer.backend.CpuDevice()
        mean0 = cpu.send(self.model.b1.avg_mean).copy()
        with chainer.using_config('train', False):
            y_test = cpu.send(self.model(x).array)
        # evaluation must not touch the running statistics
        numpy.testing.assert_array_equal(cpu.send(self.model.b1.avg_mean),
                                         mean0)
        with chainer.using_config('train', True):
            y_train = cpu.send(self.model(x).array)
        assert not numpy.array_equal(cpu.send(self.model.b1.avg_mean), mean0)
        # batch statistics normalize each output over the batch
        numpy.testing.assert_allclose(y_train.mean(axis=0), 0, atol=1e-4)
        assert not numpy.allclose(y_test, y_train)


class TestMnistMLPStructure(unittest.TestCase):

    def test_layers(self):
        model = net.MnistMLP()
        for name in ('l1', 'l2', 'l3'):
            link = getattr(model, name)
            assert isinstance(link, QuantizedLinear)
            assert link.b is None
        for name, size in (('b1', 1000), ('b2', 1000), ('b3', 10)):
            link = getattr(model, name)
            assert isinstance(link, L.BatchNormalization)
            assert link.avg_mean.shape == (size,)
        assert model.l1.W.shape == (1000, 784)
        assert model.l3.W.shape == (10, 1000)

    def test_lazy_input_size(self):
        model = net.MnistMLP(n_in=None, n_units=8, n_out=3)
        model(numpy.zeros((2, 1, 5, 5), 'f'))
        assert model.l1.W.shape == (8, 25)

    def test_classifier_trains(self):
        # a tiny separable problem: the loss must fall with STE training
        numpy.random.seed(0)
        x = numpy.random.uniform(0, 1, (64, 10)).astype('f')
        t = (x[:, 0] > x[:, 1]).astype(numpy.int32)
        model = L.Classifier(net.MnistMLP(10, 32, 2))
        opt = chainer.optimizers.Adam(alpha=0.01)
        opt.setup(model)
        losses = []
        for _ in range(60):
            opt.update(model, x, t)
            losses.append(float(model.loss.array))
        assert numpy.mean(losses[-10:]) < 0.5 * numpy.mean(losses[:5])


testing.run_module(__name__, __file__)

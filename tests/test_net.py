import unittest

import numpy

import chainer_compat  # NOQA: F401  (first: Chainer on NumPy 2)
import chainer
import chainer.links as L
from chainer import testing

import net
from link_quantized_linear import QuantizedLinear
import qst
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


class TodaysMLP(chainer.Chain):
    """The network as it was before the recipe options, written out."""

    def __init__(self, n_in, n_units, n_out, stochastic):
        super(TodaysMLP, self).__init__()
        self.stochastic = stochastic
        with self.init_scope():
            self.l1 = QuantizedLinear(n_in, n_units, nobias=True,
                                      stochastic=stochastic)
            self.b1 = L.BatchNormalization(n_units)
            self.l2 = QuantizedLinear(n_units, n_units, nobias=True,
                                      stochastic=stochastic)
            self.b2 = L.BatchNormalization(n_units)
            self.l3 = QuantizedLinear(n_units, n_out, nobias=True,
                                      stochastic=stochastic)
            self.b3 = L.BatchNormalization(n_out)

    def forward(self, x):
        h = qst.qst(self.b1(self.l1(x)), 1, 'linear', self.stochastic)
        h = qst.qst(self.b2(self.l2(h)), 1, 'linear', self.stochastic)
        return self.b3(self.l3(h))


def run(model, x, seed=7):
    outputs = []
    for train in (True, False):
        with chainer.using_config('train', train):
            numpy.random.seed(seed)
            outputs.append(model(x).array)
    return outputs


class TestRecipeOptions(unittest.TestCase):

    def setUp(self):
        self.x = numpy.random.RandomState(5).uniform(
            0, 1, (16, 30)).astype('f')

    def test_default_network_unchanged(self):
        for stochastic in (False, True):
            numpy.random.seed(3)
            today = TodaysMLP(30, 20, 5, stochastic)
            numpy.random.seed(3)
            model = net.MnistMLP(30, 20, 5, stochastic=stochastic)
            numpy.random.seed(3)
            explicit = net.MnistMLP(
                30, 20, 5, stochastic=stochastic, n_layers=2,
                input_dropout=0.0, hidden_dropout=0.0, bn='standard',
                bn_eps=2e-5, bn_decay=0.9)
            expected = run(today, self.x)
            for m in (model, explicit):
                for a, b in zip(run(m, self.x), expected):
                    numpy.testing.assert_array_equal(a, b)
                numpy.testing.assert_array_equal(m.b1.avg_mean,
                                                 today.b1.avg_mean)

    def test_dropout_only_in_training(self):
        numpy.random.seed(3)
        plain = net.MnistMLP(30, 20, 5)
        numpy.random.seed(3)
        dropped = net.MnistMLP(30, 20, 5, input_dropout=0.2,
                               hidden_dropout=0.5)
        with chainer.using_config('train', False):
            numpy.testing.assert_array_equal(plain(self.x).array,
                                             dropped(self.x).array)
        with chainer.using_config('train', True):
            assert not numpy.allclose(plain(self.x).array,
                                      dropped(self.x).array)

    def test_dropout_sits_on_the_input_of_each_linear_layer(self):
        model = net.MnistMLP(30, 20, 5, n_layers=3, input_dropout=0.25,
                             hidden_dropout=0.5)
        seen = {}
        for name in ('l1', 'l2', 'l3', 'l4'):
            link = getattr(model, name)

            def spy(h, _original=link.forward, _name=name, **kwargs):
                seen[_name] = chainer.as_array(h).copy()
                return _original(h, **kwargs)
            link.forward = spy
        x = numpy.random.RandomState(0).uniform(0.5, 1, (400, 30)) \
            .astype('f')
        with chainer.using_config('train', True):
            model(x)
        # input: 0 or x / (1 - 0.25)
        kept = seen['l1'] != 0
        assert 0.2 < 1 - kept.mean() < 0.3
        numpy.testing.assert_allclose(seen['l1'][kept], x[kept] / 0.75,
                                      rtol=1e-6)
        # hidden: binarized, then 0 or +-1 / (1 - 0.5)
        for name in ('l2', 'l3', 'l4'):
            assert set(numpy.unique(seen[name])) == {-2.0, 0.0, 2.0}
            assert 0.45 < (seen[name] == 0).mean() < 0.55

    def test_layers_and_batch_normalization_options(self):
        from link_shift_batch_normalization import ShiftBatchNormalization
        model = net.MnistMLP(30, 20, 5, n_layers=3, bn_eps=1e-4,
                             bn_decay=0.85)
        names = sorted(name for name, _ in model.namedlinks(skipself=True))
        assert names == ['/b1', '/b2', '/b3', '/b4',
                         '/l1', '/l2', '/l3', '/l4']
        assert model.l1.W.shape == (20, 30)
        assert model.l3.W.shape == (20, 20)
        assert model.l4.W.shape == (5, 20)
        for i in range(1, 5):
            bn = getattr(model, 'b{}'.format(i))
            assert type(bn) is L.BatchNormalization
            assert (bn.eps, bn.decay) == (1e-4, 0.85)
        shift = net.MnistMLP(30, 20, 5, bn='shift', bn_eps=1e-4,
                             bn_decay=0.85)
        for i in range(1, 4):
            bn = getattr(shift, 'b{}'.format(i))
            assert isinstance(bn, ShiftBatchNormalization)
            assert (bn.eps, bn.decay) == (1e-4, 0.85)
        y = shift(self.x)
        assert y.shape == (16, 5)
        # the decay is used: after one step, avg_mean = 0.15 * batch mean
        h = shift.l1(self.x).array
        numpy.testing.assert_allclose(shift.b1.avg_mean, 0.15 * h.mean(0),
                                      rtol=1e-5, atol=1e-7)

    def test_bad_options(self):
        for kwargs in ({'n_layers': 0}, {'input_dropout': 1.0},
                       {'hidden_dropout': -0.1}, {'bn': 'batch'},
                       {'bn_eps': 0}, {'bn_decay': 1.0}):
            with self.assertRaises(ValueError):
                net.MnistMLP(30, 20, 5, **kwargs)

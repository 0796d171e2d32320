import unittest
from unittest import mock

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.functions as F
import chainer.links as L
from chainer import testing

from link_quantized_linear import QuantizedLinear
import net
from qnn.links.quantized_convolution_2d import QuantizedConvolution2D
import qst
from weight_clip import WeightClip

from helpers import BACKENDS


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


# small enough for fast tests: 8x8 -> pool 4x4 -> pool 2x2, 6 * 2 * 2 -> 8
TINY = {'conv': ((4,), (6, 6)), 'fc': (8,), 'in_shape': (1, 8, 8)}
TINY_X_SHAPE = (5, 1, 8, 8)


def spy(link, seen):
    """Records the input of ``link`` (on the CPU) in ``seen``."""
    original = link.forward

    def forward(h, *args, **kwargs):
        seen.append(chainer.backend.CpuDevice().send(chainer.as_array(h)))
        return original(h, *args, **kwargs)

    link.forward = forward


@testing.inject_backend_tests(None, BACKENDS)
class TestBinaryConvNet(unittest.TestCase):

    def setUp(self):
        self.model = net.BinaryConvNet(3, TINY)
        self.x = numpy.random.uniform(0, 1, TINY_X_SHAPE).astype('f')

    def test_output_shape_and_dtype(self, backend_config):
        self.model.to_device(backend_config.device)
        y = self.model(backend_config.get_array(self.x))
        assert y.shape == (len(self.x), 3)
        assert y.dtype == numpy.float32

    def test_flat_input_is_reshaped(self, backend_config):
        # flat MNIST (what train_mnist.py loads) gives the same logits
        self.model.to_device(backend_config.device)
        cpu = chainer.backend.CpuDevice()
        with chainer.using_config('train', False):
            y = self.model(backend_config.get_array(self.x)).array
            y_flat = self.model(backend_config.get_array(
                self.x.reshape(len(self.x), -1))).array
        numpy.testing.assert_array_equal(cpu.send(y_flat), cpu.send(y))

    def test_input_real_hidden_binary(self, backend_config):
        self.model.to_device(backend_config.device)
        seen = {}
        for name in ('conv1_1', 'conv2_1', 'conv2_2', 'fc1', 'fc2'):
            seen[name] = []
            spy(getattr(self.model, name), seen[name])
        self.model(backend_config.get_array(self.x))
        # the pixels reach the first convolution as they are
        numpy.testing.assert_array_equal(seen['conv1_1'][0], self.x)
        for name in ('conv2_1', 'conv2_2', 'fc1', 'fc2'):
            assert set(numpy.unique(seen[name][0])) == {-1.0, 1.0}, name

    def test_pooling_before_batch_normalization(self, backend_config):
        # conv -> max pooling -> BN -> sign: BN sees the pooled real values
        self.model.to_device(backend_config.device)
        conv_out, bn_in = [], []
        original = self.model.conv1_1.forward

        def conv(h):
            y = original(h)
            conv_out.append(chainer.backend.CpuDevice().send(y.array))
            return y

        self.model.conv1_1.forward = conv
        spy(self.model.bn1_1, bn_in)
        fused = net.batch_normalization_sign

        def spy_fused(h, *args):
            # BN and sign as one node (training on the CPU)
            bn_in.append(chainer.backend.CpuDevice().send(
                chainer.as_array(h)))
            return fused(h, *args)
        with mock.patch.object(net, 'batch_normalization_sign', spy_fused):
            self.model(backend_config.get_array(self.x))
        numpy.testing.assert_array_equal(
            bn_in[0], F.max_pooling_2d(conv_out[0], 2).array)
        assert not numpy.isin(bn_in[0], [-1.0, 1.0]).all()

    def test_gradients_reach_all_parameters(self, backend_config):
        model = L.Classifier(self.model)
        model.to_device(backend_config.device)
        t = numpy.arange(len(self.x), dtype=numpy.int32) % 3
        model.cleargrads()
        model(backend_config.get_array(self.x),
              backend_config.get_array(t)).backward()
        cpu = chainer.backend.CpuDevice()
        names = []
        for name, param in model.namedparams():
            names.append(name)
            assert param.grad is not None, name
            assert numpy.abs(cpu.send(param.grad)).max() > 0, name
        # every layer of the architecture has its W, every BN gamma/beta
        n_layers = sum(len(stage) for stage in TINY['conv']) + len(
            TINY['fc']) + 1
        assert len(names) == 3 * n_layers

    def test_weight_clip_covers_every_quantized_weight(self, backend_config):
        self.model.to_device(backend_config.device)
        x = backend_config.get_array(self.x)
        self.model(x)  # lazy initialization
        quantized = [p for link in self.model.links()
                     if hasattr(link, 'quantized_params')
                     for p in link.quantized_params()]
        weights = [p for name, p in self.model.namedparams()
                   if name.endswith('/W')]
        assert sorted(map(id, quantized)) == sorted(map(id, weights))
        # large enough that one SGD step moves everything past +-1
        optimizer = chainer.optimizers.SGD(lr=1000.0)
        optimizer.setup(self.model)
        optimizer.add_hook(WeightClip(-1.0, 1.0))
        # (not a sum of squares: the output BN makes that nearly constant)
        r = backend_config.get_array(
            numpy.random.uniform(-1, 1, (len(self.x), 3)).astype('f'))
        optimizer.update(lambda: F.sum(self.model(x) * r))
        cpu = chainer.backend.CpuDevice()
        for name, param in self.model.namedparams():
            a = cpu.send(param.array)
            if name.endswith('/W'):
                assert a.min() >= -1.0 and a.max() <= 1.0, name
                assert numpy.isin(a, [-1.0, 1.0]).any(), name
        assert any(numpy.abs(cpu.send(p.array)).max() > 1.0
                   for name, p in self.model.namedparams()
                   if not name.endswith('/W'))


class TestBinaryConvNetStructure(unittest.TestCase):

    def check_layers(self, model, arch, x_shape, n_out):
        # every weight exists before the first forward pass, so that
        # step_sizes.scale_step_sizes can read its shape
        assert all(param.array is not None for param in model.params())
        y = model(numpy.random.uniform(0, 1, x_shape).astype('f'))
        assert y.shape == (x_shape[0], n_out)
        channels = x_shape[1]
        size = x_shape[2]
        for i, stage in enumerate(arch['conv'], 1):
            for j, out in enumerate(stage, 1):
                conv = getattr(model, 'conv{}_{}'.format(i, j))
                bn = getattr(model, 'bn{}_{}'.format(i, j))
                assert isinstance(conv, QuantizedConvolution2D)
                assert conv.b is None
                assert conv.W.shape == (out, channels, 3, 3)
                assert bn.avg_mean.shape == (out,)
                channels = out
            size = (size + 1) // 2  # 2x2 max pooling (cover_all)
        n_in = channels * size * size
        for k, units in enumerate(tuple(arch['fc']) + (n_out,), 1):
            fc = getattr(model, 'fc{}'.format(k))
            assert isinstance(fc, QuantizedLinear)
            assert fc.b is None
            assert fc.W.shape == (units, n_in)
            assert getattr(model, 'bn_fc{}'.format(k)).avg_mean.shape == (
                units,)
            n_in = units

    def test_default_is_the_small_mnist_network(self):
        model = net.BinaryConvNet()
        arch = net.ARCHITECTURES['small']
        assert arch['in_shape'] == (1, 28, 28)
        self.check_layers(model, arch, (2, 1, 28, 28), 10)

    def test_wide_network_doubles_the_small_one(self):
        small = net.ARCHITECTURES['small']
        wide = net.ARCHITECTURES['wide']
        assert wide['conv'] == tuple(tuple(2 * c for c in stage)
                                     for stage in small['conv'])
        assert wide['fc'] == tuple(2 * n for n in small['fc'])
        assert wide['in_shape'] == small['in_shape']
        self.check_layers(net.BinaryConvNet(10, 'wide'), wide,
                          (2, 1, 28, 28), 10)

    def test_paper_network(self):
        # 2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC-10 on 32x32x3
        arch = net.ARCHITECTURES['paper']
        assert arch['conv'] == ((128, 128), (256, 256), (512, 512))
        assert arch['fc'] == (1024, 1024)
        assert arch['in_shape'] == (3, 32, 32)
        model = net.BinaryConvNet(10, 'paper')
        with chainer.using_config('train', False), \
                chainer.no_backprop_mode():
            self.check_layers(model, arch, (2, 3, 32, 32), 10)

    def test_options_reach_every_layer(self):
        quantization = qst.Quantization(
            weight_bits=2, activation_bits=3, quantizer='log',
            stochastic_weights=True, gradient_bits=6, error_bits=8)
        model = net.BinaryConvNet(3, TINY, quantization=quantization)
        layers = [link for link in model.links()
                  if hasattr(link, 'quantized_params')]
        assert len(layers) == sum(len(stage) for stage in TINY['conv']) + len(
            TINY['fc']) + 1
        for link in layers:
            assert link.quantization is quantization
        assert model.quantization is quantization

    def test_bad_arguments(self):
        with pytest.raises(ValueError):
            net.BinaryConvNet(arch='huge')
        with pytest.raises(TypeError):
            net.BinaryConvNet(quantization={'activation_bits': 0})
        with pytest.raises(TypeError):
            net.MnistMLP(weight_bits=2)

    def test_classifier_trains(self):
        # a tiny separable problem: the loss must fall with STE training
        numpy.random.seed(0)
        x = numpy.random.uniform(0, 1, (32,) + TINY['in_shape']).astype('f')
        t = (x[:, 0, :4].mean(axis=(1, 2)) > x[:, 0, 4:].mean(
            axis=(1, 2))).astype(numpy.int32)
        model = L.Classifier(net.BinaryConvNet(2, TINY))
        opt = chainer.optimizers.Adam(alpha=0.01)
        opt.setup(model)
        opt.add_hook(WeightClip())
        losses = []
        for _ in range(40):
            opt.update(model, x, t)
            losses.append(float(model.loss.array))
        assert numpy.mean(losses[-5:]) < 0.5 * numpy.mean(losses[:5])


testing.run_module(__name__, __file__)


class TodaysMLP(chainer.Chain):
    """The network as it was before the recipe options, written out."""

    def __init__(self, n_in, n_units, n_out, stochastic):
        super(TodaysMLP, self).__init__()
        self.stochastic = stochastic
        with self.init_scope():
            weights = qst.Quantization(stochastic_weights=stochastic)
            self.l1 = QuantizedLinear(n_in, n_units, nobias=True,
                                      quantization=weights)
            self.b1 = L.BatchNormalization(n_units)
            self.l2 = QuantizedLinear(n_units, n_units, nobias=True,
                                      quantization=weights)
            self.b2 = L.BatchNormalization(n_units)
            self.l3 = QuantizedLinear(n_units, n_out, nobias=True,
                                      quantization=weights)
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
            both = qst.Quantization(stochastic_activations=stochastic,
                                    stochastic_weights=stochastic)
            model = net.MnistMLP(30, 20, 5, both)
            numpy.random.seed(3)
            explicit = net.MnistMLP(
                30, 20, 5, quantization=both, n_layers=2,
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
        from qnn.links.shift_batch_normalization import ShiftBatchNormalization
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
            # hidden layers shift-based, the output's (logits) standard
            assert isinstance(bn, ShiftBatchNormalization) == (i < 3)
            assert type(bn) is L.BatchNormalization or i < 3
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


def quantizations(monkeypatch, model, x):
    """``[(of a weight, stochastic, same as the deterministic quantizer)]``
    for every :func:`qst.quantize` of one forward pass of ``model``."""
    original = qst.quantize
    calls = []

    def spy(v, bits=1, quantizer='linear', stochastic=False):
        # (the weights of lazy links exist only from their first call)
        weight = any(v is param.array for name, param in model.namedparams()
                     if name.endswith('/W'))
        y = original(v, bits, quantizer, stochastic)
        calls.append((weight, stochastic, bool(
            (y == original(v, bits, quantizer)).all())))
        return y
    monkeypatch.setattr(qst, 'quantize', spy)
    # in training the deterministic sign of a hidden layer comes with its
    # batch normalization, as one node (net.normalized_activation)
    fused = net.batch_normalization_sign

    def spy_fused(*args):
        calls.append((False, False, True))
        return fused(*args)
    monkeypatch.setattr(net, 'batch_normalization_sign', spy_fused)
    numpy.random.seed(0)
    model(x)
    return calls


@pytest.mark.parametrize('activations, weights', [
    (False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize('train', [True, False])
@pytest.mark.parametrize('make, shape', [
    (lambda **kw: net.MnistMLP(30, 20, 5, **kw), (16, 30)),
    (lambda **kw: net.BinaryConvNet(3, TINY, **kw), TINY_X_SHAPE)])
def test_stochastic_activations_and_weights_are_separate(
        monkeypatch, make, shape, train, activations, weights):
    model = make(quantization=qst.Quantization(
        stochastic_activations=activations, stochastic_weights=weights))
    x = numpy.random.RandomState(5).uniform(0, 1, shape).astype('f')
    with chainer.using_config('train', train):
        calls = quantizations(monkeypatch, model, x)
    n_weights = len([link for link in model.links()
                     if hasattr(link, 'quantized_params')])
    assert sum(weight for weight, _, _ in calls) == n_weights
    # every hidden layer's activations, not the logits
    assert len(calls) == 2 * n_weights - 1
    for weight, stochastic, deterministic in calls:
        expected = (weights if weight else activations) and train
        assert stochastic == expected
        # stochastic rounding changes some of the hidden values and of the
        # small initial weights (probabilities near 1/2)
        assert deterministic != expected


@pytest.mark.parametrize('make', [
    lambda **kw: net.MnistMLP(784, 256, 10, **kw),
    lambda **kw: net.BinaryConvNet(10, **kw)])
def test_weight_init(make):
    numpy.random.seed(0)
    uniform = make(weight_init='uniform')
    numpy.random.seed(0)
    default = make()
    for link in uniform.links():
        if not isinstance(link, (QuantizedLinear, QuantizedConvolution2D)):
            continue
        W = link.W.array
        fan_in = W.size // W.shape[0]
        # U(-1, 1): the clipping range, mean |w| 1/2
        assert -1 <= W.min() and W.max() <= 1
        assert abs(numpy.abs(W).mean() - 0.5) < 0.05
        assert abs(W.std() - 1 / numpy.sqrt(3)) < 0.05
        # Chainer's default: N(0, 1/fan_in)
        W = default[link.name].W.array
        assert abs(W.std() * numpy.sqrt(fan_in) - 1) < 0.15
    # batch normalization starts as Chainer's either way
    numpy.testing.assert_array_equal(
        [p.array.sum() for n, p in sorted(uniform.namedparams())
         if '/b' in n or '/bn' in n],
        [p.array.sum() for n, p in sorted(default.namedparams())
         if '/b' in n or '/bn' in n])


def test_unknown_weight_init():
    with pytest.raises(ValueError, match='weight_init must be one of '
                       'lecun-normal, uniform'):
        net.MnistMLP(weight_init='glorot')
    with pytest.raises(ValueError, match='weight_init'):
        net.BinaryConvNet(weight_init='normal')


@pytest.mark.parametrize('make, args', [
    (lambda: net.MnistMLP(784, 1000, 10), ((1, 28, 28), 10, 1000, None)),
    (lambda: net.MnistMLP(784, 100, 10), ((1, 28, 28), 10, 100, None)),
    (lambda: net.BinaryConvNet(10, 'small'), ((1, 28, 28), 10, None,
                                              'small')),
    (lambda: net.BinaryConvNet(10, 'paper'), ((3, 32, 32), 10, None,
                                              'paper'))])
def test_largest_weight_from_the_sizes_alone(make, args):
    # what a snapshot's reader may expect at most, without building
    largest = max(param.size for param in make().params()
                  if param.name == 'W')
    assert net.largest_weight(*args) == largest


@pytest.mark.parametrize('size,weights,alphas', [
    # the seed logs' summary: 27,630 weights
    ('seed', 27630, None),
    # WAGE's log of its 2-bit LeNet-5: "Total: 581408", scales 2, 16, 16, 8
    ('wage', 581408, [2, 16, 16, 8])])
def test_wage_lenet5_sizes(size, weights, alphas):
    bits = 1 if size == 'seed' else 2
    model = net.WageLeNet5(10, size, quantization=qst.Quantization(
        bits, 2, error_bits=8))
    assert sum(p.size for p in model.params()) == weights
    assert all(link.b is None for link in model.children())
    if alphas is not None:
        assert [model[n].alpha for n in ('conv1', 'conv2', 'fc1', 'fc2')] \
            == alphas
    x = numpy.random.RandomState(0).uniform(-1, 1, (3, 784)).astype('f')
    assert model(x).shape == (3, 10)


def test_wage_lenet5_quantizes_activations_and_errors():
    model = net.WageLeNet5(10, 'seed', quantization=qst.Quantization(
        1, 2, error_bits=8))
    x = numpy.random.RandomState(1).uniform(-1, 1, (4, 1, 28, 28))
    x = chainer.Variable(x.astype('f'))
    hidden = model._activation(model.fc1(
        numpy.random.RandomState(2).uniform(-1, 1, (4, 128)).astype('f')))
    # 2-bit levels after a ReLU: 0 and 1/2
    assert set(numpy.unique(hidden.array)) <= {0.0, 0.5}
    y = model(x)
    y.grad = numpy.random.RandomState(3).standard_normal(y.shape).astype('f')
    model.cleargrads()
    y.backward()
    # the first layer's weight gradient sums products of its quantized
    # input (levels of 1/2) and the quantized error (levels of 2^-7; the
    # max pooling passes it to one element of each window)
    g = model.conv1.W.grad / 2.0 ** -8
    assert numpy.array_equal(g, numpy.round(g)) and g.any()


def test_wage_lenet5_refuses_an_unknown_size():
    with pytest.raises(ValueError):
        net.WageLeNet5(10, 'alexnet')

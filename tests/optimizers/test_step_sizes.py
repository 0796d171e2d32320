import math
import types

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.links as L
from chainer.training import extensions

import net
from qnn.optimizers import step_sizes
from qnn.optimizers.inplace_adam import InplaceAdam
from qnn.optimizers.shift_adamax import ShiftAdaMax


def model_and_optimizer(optimizer):
    numpy.random.seed(0)
    model = L.Classifier(net.MnistMLP(12, 16, 4))
    optimizer.setup(model)
    return model, optimizer


def test_glorot_scale():
    assert step_sizes.glorot_scale(784, 4096) == pytest.approx(
        1 / math.sqrt(1.5 / 4880))
    assert step_sizes.glorot_scale(2, 1) == pytest.approx(math.sqrt(2))
    with pytest.raises(ValueError):
        step_sizes.glorot_scale(0, 3)


def test_scales_quantized_weights_only():
    model, opt = model_and_optimizer(InplaceAdam(alpha=1e-3))
    scales = step_sizes.scale_step_sizes(model, opt)
    mlp = model.predictor
    assert scales == {
        '/predictor/l1/W': pytest.approx(1 / math.sqrt(1.5 / 28)),
        '/predictor/l2/W': pytest.approx(1 / math.sqrt(1.5 / 32)),
        '/predictor/l3/W': pytest.approx(1 / math.sqrt(1.5 / 20))}
    for name in ('l1', 'l2', 'l3'):
        rule = getattr(mlp, name).W.update_rule
        assert rule.hyperparam.eta == scales['/predictor/{}/W'.format(name)]
    for name in ('b1', 'b2', 'b3'):
        for param in getattr(mlp, name).params():
            assert param.update_rule.hyperparam.eta == 1.0
    # alpha is not set on any rule: it still comes from the optimizer
    opt.alpha = 5e-4
    assert mlp.l1.W.update_rule.hyperparam.alpha == 5e-4


def test_scales_a_convnet_as_built():
    # BinaryConvNet's weights exist before any forward pass; a convolution's
    # fans count the kernel's area on both sides
    arch = {'conv': ((4,), (6,)), 'fc': (5,), 'in_shape': (2, 8, 8)}
    model = L.Classifier(net.BinaryConvNet(3, arch))
    opt = InplaceAdam(alpha=1e-3)
    opt.setup(model)
    scales = step_sizes.scale_step_sizes(model, opt)
    assert scales == {
        '/predictor/conv1_1/W': pytest.approx(1 / math.sqrt(1.5 / (18 + 36))),
        '/predictor/conv2_1/W': pytest.approx(1 / math.sqrt(1.5 / (36 + 54))),
        '/predictor/fc1/W': pytest.approx(
            1 / math.sqrt(1.5 / (6 * 2 * 2 + 5))),
        '/predictor/fc2/W': pytest.approx(1 / math.sqrt(1.5 / (5 + 3)))}
    assert model.predictor.conv2_1.W.update_rule.hyperparam.eta == \
        scales['/predictor/conv2_1/W']


def fake_trainer(opt):
    return types.SimpleNamespace(
        updater=types.SimpleNamespace(get_optimizer=lambda name: opt))


@pytest.mark.parametrize('make', [
    lambda: InplaceAdam(alpha=1e-2),
    lambda: chainer.optimizers.Adam(alpha=1e-2),
    lambda: ShiftAdaMax(alpha=1e-2)])
def test_scale_compounds_with_exponential_shift(make):
    model, opt = model_and_optimizer(make())
    scales = step_sizes.scale_step_sizes(model, opt)
    shift = extensions.ExponentialShift('alpha', 0.5, init=1e-2)
    trainer = fake_trainer(opt)
    shift.initialize(trainer)
    rng = numpy.random.RandomState(0)
    params = dict(model.namedparams())
    for epoch in range(4):
        for param in model.params():
            param.grad = rng.normal(0, 1, param.shape).astype(param.dtype)
        before = {n: p.array.copy() for n, p in params.items()}
        opt.update()
        assert opt.alpha == pytest.approx(1e-2 * 0.5 ** epoch)
        for name, param in params.items():
            rule = param.update_rule
            scale = scales.get(name, 1.0)
            hp = rule.hyperparam
            assert hp.alpha == opt.alpha  # the shift reaches every rule
            assert hp.eta * hp.alpha == pytest.approx(scale * opt.alpha)
            delta = param.array - before[name]
            if isinstance(opt, ShiftAdaMax):
                # the scaled step, rounded to a power of two
                step = rule.step_size
                assert step == pytest.approx(
                    scale * opt.alpha / (1 - hp.beta1 ** rule.t),
                    rel=0.42)
                from qnn.functions.ap2 import ap2
                expected = -step * rule.state['m'] / ap2(
                    rule.state['u'] + numpy.float32(hp.eps))
            else:
                expected = -scale * rule.alpha_t * rule.state['m'] / (
                    numpy.sqrt(rule.state['v']) + hp.eps)
            numpy.testing.assert_allclose(delta, expected, rtol=1e-4,
                                          atol=1e-7)
        shift(trainer)


def test_errors():
    model = L.Classifier(net.MnistMLP(12, 16, 4))
    with pytest.raises(ValueError):
        step_sizes.scale_step_sizes(model, InplaceAdam())  # no setup
    opt = chainer.optimizers.SGD()
    opt.setup(model)
    with pytest.raises(TypeError):
        step_sizes.scale_step_sizes(model, opt)
    lazy = L.Classifier(net.MnistMLP(None, 16, 4))
    opt = InplaceAdam()
    opt.setup(lazy)
    with pytest.raises(ValueError, match='not initialized'):
        step_sizes.scale_step_sizes(lazy, opt)

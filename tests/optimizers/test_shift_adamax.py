import io

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import serializers
from chainer import testing

from qnn.optimizers import shift_adamax
from qnn.optimizers.shift_adamax import ShiftAdaMax

from helpers import KERNEL_SIZES, ap2_reference, needs_numba


class Model(chainer.Chain):

    def __init__(self, dtype, shape=(7, 5)):
        super(Model, self).__init__()
        with self.init_scope():
            self.w = chainer.Parameter(
                numpy.random.RandomState(0).uniform(-1, 1, shape)
                .astype(dtype))


@testing.parameterize(*testing.product({
    'dtype': [numpy.float32, numpy.float64],
    'kwargs': [{}, {'alpha': 0.01, 'beta1': 0.9, 'beta2': 0.999},
               {'eta': 3.0}],
}))
class TestShiftAdaMax(object):

    def test_against_reference(self):
        model = Model(self.dtype)
        opt = ShiftAdaMax(**self.kwargs)
        opt.setup(model)
        hp = opt.hyperparam
        theta = model.w.array.astype(numpy.float64)
        m = numpy.zeros_like(theta)
        u = numpy.zeros_like(theta)
        rng = numpy.random.RandomState(1)
        for t in range(1, 6):
            g = rng.normal(0, 0.1, theta.shape).astype(self.dtype)
            if t == 3:
                g[0] = 0  # u decays where the gradient vanishes
            model.w.grad = g.copy()
            opt.update()
            m = hp.beta1 * m + (1 - hp.beta1) * g
            u = numpy.maximum(hp.beta2 * u, numpy.abs(g))
            step = ap2_reference(hp.eta * hp.alpha / (1 - hp.beta1 ** t))
            theta = theta - step * m / ap2_reference(u + hp.eps)
            rule = model.w.update_rule
            assert rule.step_size == step
            tol = 1e-6 if self.dtype == numpy.float32 else 1e-12
            numpy.testing.assert_allclose(rule.state['u'], u, rtol=tol)
            numpy.testing.assert_allclose(model.w.array, theta, rtol=tol,
                                          atol=tol)
        assert model.w.array.dtype == self.dtype

    def test_update_is_a_shift_of_m(self):
        model = Model(self.dtype)
        opt = ShiftAdaMax(**self.kwargs)
        opt.setup(model)
        rng = numpy.random.RandomState(2)
        for t in range(1, 4):
            model.w.grad = rng.normal(0, 1, model.w.shape).astype(self.dtype)
            before = model.w.array.copy()
            opt.update()
            rule = model.w.update_rule
            mantissa, _ = numpy.frexp(rule.step_size)
            assert mantissa == 0.5  # an exact power of two
            # -(theta_t - theta_{t-1}) / m: step / AP2(u + eps), a power of
            # two (to the rounding of the subtraction from theta)
            ratio = (before - model.w.array).astype(numpy.float64) / \
                rule.state['m']
            numpy.testing.assert_allclose(
                numpy.abs(ratio), numpy.abs(ap2_reference(ratio)),
                rtol=1e-3 if self.dtype == numpy.float32 else 1e-9)


def test_converges_on_a_quadratic():
    # f(w) = 1/2 sum a (w - c)^2 with curvatures spread over 3 decades
    rng = numpy.random.RandomState(3)
    a = 10.0 ** rng.uniform(-1, 2, 20)
    c = rng.uniform(-1, 1, 20)
    model = Model(numpy.float64, (20,))
    opt = ShiftAdaMax(alpha=2.0 ** -5)
    opt.setup(model)
    start = numpy.abs(model.w.array - c).max()
    for i in range(600):
        if i == 400:
            opt.alpha = 2.0 ** -9  # a decayed step, as a schedule would
        model.w.grad = a * (model.w.array - c)
        opt.update()
    assert start > 0.5
    assert numpy.abs(model.w.array - c).max() < 1e-2


def test_hyperparameters_and_defaults():
    opt = ShiftAdaMax()
    assert opt.alpha == 2.0 ** -10
    assert 1 - opt.beta1 == 2.0 ** -3
    assert 1 - opt.beta2 == 2.0 ** -10
    opt.alpha = 0.5
    model = Model(numpy.float32)
    opt.setup(model)
    assert model.w.update_rule.hyperparam.alpha == 0.5
    with pytest.raises(RuntimeError):
        model.w.update_rule.step_size  # t == 0


def test_no_gradient_no_nan():
    model = Model(numpy.float32)
    opt = ShiftAdaMax()
    opt.setup(model)
    before = model.w.array.copy()
    model.w.grad = numpy.zeros_like(before)
    opt.update()
    numpy.testing.assert_array_equal(model.w.array, before)


def test_serialization_round_trip():
    model = Model(numpy.float32)
    opt = ShiftAdaMax()
    opt.setup(model)
    model.w.grad = numpy.ones_like(model.w.array)
    opt.update()
    f = io.BytesIO()
    serializers.save_npz(f, opt)
    f.seek(0)
    model2 = Model(numpy.float32)
    opt2 = ShiftAdaMax()
    opt2.setup(model2)
    serializers.load_npz(f, opt2)
    rule, rule2 = model.w.update_rule, model2.w.update_rule
    assert rule2.t == rule.t == 1
    for key in ('m', 'u'):
        numpy.testing.assert_array_equal(rule2.state[key], rule.state[key])


@pytest.mark.parametrize('kernels', ['numba', 'numpy'])
def test_rounded_norm_never_decays(kernels, monkeypatch):
    # BinaryNet's Torch7 AdaMax stores the norm rounded: AP2(beta2 2^k) is
    # 2^k, so after one large gradient the norm stays, and the steps of
    # later small gradients shrink; the paper's norm decays by beta2
    monkeypatch.setenv('QNN_CPU_KERNELS', kernels)
    norms = {}
    for round_norm in (False, True):
        link = chainer.Link()
        with link.init_scope():
            link.w = chainer.Parameter(numpy.zeros(3, numpy.float32))
        optimizer = ShiftAdaMax(round_norm=round_norm)
        optimizer.setup(link)
        link.w.grad = numpy.array([3.0, -0.3, 0.0], numpy.float32)
        optimizer.update()
        for _ in range(2000):
            link.w.grad = numpy.full(3, 1e-3, numpy.float32)
            optimizer.update()
        norms[round_norm] = link.w.update_rule.state['u'].copy()
    # 3 rounds to 4, 0.3 to 0.25, 1e-3 to 2^-10, and there they stay
    numpy.testing.assert_array_equal(norms[True], [4.0, 0.25, 2.0 ** -10])
    beta2 = 1 - 2.0 ** -10
    assert norms[False][0] == pytest.approx(
        max(3.0 * beta2 ** 2000, 1e-3), rel=1e-3)
    assert norms[False][0] < 0.5


def shift_adamax_model(n, dtype):
    model = chainer.Link()
    with model.init_scope():
        model.w = chainer.Parameter(
            numpy.random.default_rng(5).uniform(-1, 1, n).astype(dtype))
    return model


@needs_numba
@pytest.mark.parametrize('n', KERNEL_SIZES)
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
@pytest.mark.parametrize('kwargs', [
    {}, {'alpha': 0.01, 'eta': 3.0},
    {'eps': 0.0},  # AP2 of 0 and of subnormals (frexp's way)
    {'round_norm': True}, {'round_norm': True, 'eps': 0.0}])
def test_shift_adamax_kernel_equals_numpy_path(n, dtype, kwargs,
                                               monkeypatch):
    # four steps of ShiftAdaMax with and without the kernel, gradients of
    # magnitudes 1e-40 to 1e2 (AP2 of subnormals and of many exponents),
    # zeros, NaN and inf: the same parameters and states, bit for bit
    rng = numpy.random.default_rng(6)
    grads = []
    for t in range(4):
        g = rng.normal(0, 1, n) * 10.0 ** rng.integers(-40, 3, n)
        g = g.astype(dtype)
        g[t:t + 3] = [0.0, -0.0, numpy.nan] if t == 2 else [0.0, -0.0, 1.0]
        if t == 3:
            g[7] = numpy.inf
        grads.append(g)
    results = []
    for kernels in ('numba', 'numpy'):
        monkeypatch.setenv('QNN_CPU_KERNELS', kernels)
        model = shift_adamax_model(n, dtype)
        optimizer = ShiftAdaMax(**kwargs)
        optimizer.setup(model)
        for g in grads:
            model.w.grad = g.copy()
            with numpy.errstate(divide='ignore', invalid='ignore'):
                optimizer.update()  # 0 / 0 where eps = 0: NaN, on purpose
        state = model.w.update_rule.state
        results.append([model.w.array, state['m'], state['u']])
    for name, got, expected in zip(('param', 'm', 'u'), *results):
        assert got.dtype == dtype
        numpy.testing.assert_array_equal(got, expected, name)
        numpy.testing.assert_array_equal(numpy.signbit(got),
                                         numpy.signbit(expected), name)
    assert numpy.isnan(results[0][0]).any()  # the NaN went through


@needs_numba
def test_shift_adamax_uses_kernel(monkeypatch):
    calls = []
    kernel = shift_adamax.numba_shift_adamax
    monkeypatch.setattr(shift_adamax, 'numba_shift_adamax',
                        lambda *a: calls.append(1) or kernel(*a))
    model = shift_adamax_model(100, numpy.float32)
    optimizer = ShiftAdaMax()
    optimizer.setup(model)
    model.w.grad = numpy.ones(100, numpy.float32)
    optimizer.update()
    assert calls == [1]

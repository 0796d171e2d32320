import io

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import testing

from link_quantized_linear import QuantizedLinear
from qnn.backends import cpu_threads
from qnn.optimizers import inplace_adam
from qnn.optimizers.inplace_adam import InplaceAdam
from qnn.optimizers.inplace_adam import InplaceAdamRule
from weight_clip import WeightClip

from helpers import KERNEL_SIZES, needs_numba


class Model(chainer.Chain):

    def __init__(self, dtype):
        super(Model, self).__init__()
        with self.init_scope():
            self.a = chainer.Parameter(
                numpy.random.uniform(-1, 1, (30, 20)).astype(dtype))
            self.b = chainer.Parameter(
                numpy.random.uniform(-1, 1, (20,)).astype(dtype))


def train(optimizer, dtype, steps=5):
    numpy.random.seed(1)
    model = Model(dtype)
    optimizer.setup(model)
    for _ in range(steps):
        for p in model.params():
            p.grad = numpy.random.normal(0, 1e-2, p.shape).astype(dtype)
        optimizer.update()
    return model, optimizer


@testing.parameterize(*testing.product({
    'dtype': [numpy.float16, numpy.float32, numpy.float64],
    'kwargs': [{}, {'alpha': 0.01, 'beta1': 0.8, 'eps': 1e-6},
               {'weight_decay_rate': 0.1, 'eta': 0.5}, {'amsgrad': True}],
}))
class TestInplaceAdam(object):

    def test_bit_for_bit_chainer_adam(self):
        expected, _ = train(chainer.optimizers.Adam(**self.kwargs),
                            self.dtype)
        got, optimizer = train(InplaceAdam(**self.kwargs), self.dtype)
        for (name, p), q in zip(got.namedparams(), expected.params()):
            assert p.dtype == self.dtype, name
            numpy.testing.assert_array_equal(p.array, q.array, name)
        assert optimizer.t == 5


@pytest.mark.parametrize('threads', [1, 2, 3])
def test_threads_bit_for_bit(threads):
    # large enough to be cut into pieces, and not evenly
    shape = (3 * cpu_threads.MIN_CHUNK + 7,)

    def run(optimizer):
        numpy.random.seed(2)
        model = chainer.Link()
        with model.init_scope():
            model.w = chainer.Parameter(
                numpy.random.uniform(-1, 1, shape).astype(numpy.float32))
        optimizer.setup(model)
        for _ in range(3):
            model.w.grad = numpy.random.normal(0, 1e-2, shape).astype(
                numpy.float32)
            optimizer.update()
        return model.w.array, optimizer.target.w.update_rule.state['v']

    expected = run(chainer.optimizers.Adam(weight_decay_rate=0.01))
    got = run(InplaceAdam(weight_decay_rate=0.01, threads=threads))
    for a, b in zip(got, expected):
        numpy.testing.assert_array_equal(a, b)


def test_snapshot_interchangeable_with_chainer_adam():
    _, optimizer = train(InplaceAdam(), numpy.float32)
    buf = io.BytesIO()
    chainer.serializers.save_npz(buf, optimizer)
    buf.seek(0)
    other = chainer.optimizers.Adam()
    other.setup(Model(numpy.float32))
    chainer.serializers.load_npz(buf, other)
    assert other.t == 5
    saved = dict(optimizer.target.namedparams())
    for name, p in other.target.namedparams():
        for key in ('m', 'v'):
            numpy.testing.assert_array_equal(
                p.update_rule.state[key],
                saved[name].update_rule.state[key])


def test_no_new_arrays_per_step(monkeypatch):
    # the in-place path must not fall back to Chainer's allocating one
    _, optimizer = train(InplaceAdam(), numpy.float32, steps=1)
    calls = []
    monkeypatch.setattr(
        chainer.optimizers.adam.AdamRule, 'update_core_cpu',
        lambda self, param: calls.append(param))
    for p in optimizer.target.params():
        p.grad = numpy.ones(p.shape, numpy.float32)
    optimizer.update()
    assert calls == []


def reference_adam(param, grad, m, v, c1, c2, alpha_t, eps, eta, wd, clip):
    # inplace_adam's NumPy passes, then the clip
    t = numpy.empty_like(param)
    numpy.subtract(grad, m, out=t)
    t *= c1
    m += t
    numpy.multiply(grad, grad, out=t)
    t -= v
    t *= c2
    v += t
    numpy.sqrt(v, out=t)
    t += eps
    numpy.divide(alpha_t, t, out=t)
    t *= m
    decay = 1.0 - eta * wd
    if decay != 1:
        param *= decay
    t *= -eta
    param += t
    if clip is not None:
        numpy.clip(param, clip[0], clip[1], out=param)


def adam_arrays(n, dtype, seed=0):
    rng = numpy.random.default_rng(seed)
    param = rng.uniform(-1.3, 1.3, n).astype(dtype)
    param[n // 2] = numpy.nan  # kept by the clip
    param[n // 3] = -0.0
    grad = rng.normal(0, 1e-2, n).astype(dtype)
    m = rng.normal(0, 1e-3, n).astype(dtype)
    v = rng.uniform(0, 1e-4, n).astype(dtype)
    return [param, grad, m, v]


@needs_numba
@pytest.mark.parametrize('n', KERNEL_SIZES)
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
@pytest.mark.parametrize('hyper', [
    (0.1, 0.001, 1e-3, 1e-8, 1.0, 0.0),
    (0.2, 0.01, 0.0371, 1e-6, 0.037, 0.1),  # Glorot eta, weight decay
])
@pytest.mark.parametrize('clip', [None, (-1.0, 1.0), (-0.5, 0.25)])
def test_adam_equals_reference(n, dtype, hyper, clip):
    expected = adam_arrays(n, dtype)
    got = [a.copy() for a in expected]
    reference_adam(*expected, *hyper, clip)
    c1, c2, alpha_t, eps, eta, wd = hyper
    inplace_adam.numba_adam(*got, c1=c1, c2=c2, alpha_t=alpha_t, eps=eps,
                            eta=eta, weight_decay_rate=wd, clip=clip)
    for name, a, b in zip(('param', 'grad', 'm', 'v'), got, expected):
        numpy.testing.assert_array_equal(a, b, name)
    if clip is not None:
        inside = ~numpy.isnan(got[0])
        assert (got[0][inside] >= clip[0]).all()
        assert (got[0][inside] <= clip[1]).all()
        assert numpy.isnan(got[0][n // 2])


class ClippedModel(chainer.Chain):

    def __init__(self):
        super(ClippedModel, self).__init__()
        with self.init_scope():
            # the first large enough for the parallel kernel
            self.l1 = QuantizedLinear(300, 400)
            self.l2 = QuantizedLinear(400, 10)
            self.b = chainer.links.Bias(shape=(10,))  # not clipped

    def forward(self, x):
        return self.b(self.l2(self.l1(x)))


def train_clipped(optimizer, steps=4, clip=True):
    numpy.random.seed(3)
    model = ClippedModel()
    optimizer.setup(model)
    if clip:
        optimizer.add_hook(WeightClip(-1.0, 1.0))
    x = numpy.random.uniform(-1, 1, (20, 300)).astype('f')
    for _ in range(steps):
        optimizer.update(lambda: chainer.functions.sum(model(x) ** 2))
    return model


def params(model):
    return {name: p.array.copy() for name, p in model.namedparams()}


@needs_numba
@pytest.mark.parametrize('kernels', ['numba', 'numpy'])
def test_fused_clip_bit_for_bit_chainer_adam_and_hook(kernels, monkeypatch):
    # a large step pushes weights past the bounds: the clip must act
    expected = params(train_clipped(chainer.optimizers.Adam(alpha=0.3)))
    monkeypatch.setenv('QNN_CPU_KERNELS', kernels)
    got = train_clipped(InplaceAdam(alpha=0.3))
    for name, array in params(got).items():
        numpy.testing.assert_array_equal(array, expected[name], name)
    W = got.l1.W.array
    assert W.max() == 1 and W.min() == -1
    assert abs(got.b.b.array).max() > 1  # the bias is not clipped
    # the rules clipped, so the hook skipped those weights
    for link in (got.l1, got.l2):
        assert link.W.update_rule.clipped[2] == 4
    assert got.b.b.update_rule.clipped is None


@needs_numba
def test_hook_clips_when_rule_did_not(monkeypatch):
    clipped_by_hook = []
    clip = WeightClip._clip
    monkeypatch.setattr(WeightClip, '_clip',
                        lambda self, a: clipped_by_hook.append(a.shape) or
                        clip(self, a))
    train_clipped(InplaceAdam(alpha=0.3), steps=2)
    assert clipped_by_hook == []  # fused every time
    # another post-update hook first: the hook clips, nothing is fused
    optimizer = InplaceAdam(alpha=0.3)
    numpy.random.seed(3)
    model = ClippedModel()
    optimizer.setup(model)
    seen = []
    optimizer.add_hook(lambda opt: seen.append(opt.target.l1.W.array.max()),
                       name='probe', timing='post')
    optimizer.add_hook(WeightClip(-1.0, 1.0))
    x = numpy.random.uniform(-1, 1, (20, 300)).astype('f')
    for _ in range(4):
        optimizer.update(lambda: chainer.functions.sum(model(x) ** 2))
    assert max(seen) > 1  # the probe saw the unclipped updates
    assert sorted(clipped_by_hook) == [(10, 400)] * 4 + [(400, 300)] * 4
    assert model.l1.W.array.max() <= 1


@needs_numba
def test_no_hook_no_clip():
    model = train_clipped(InplaceAdam(alpha=0.3), clip=False)
    assert abs(model.l1.W.array).max() > 1
    assert model.l1.W.update_rule.clipped is None


@needs_numba
def test_fused_clip_lasts_one_update():
    optimizer = InplaceAdam(alpha=0.3)
    model = train_clipped(optimizer, steps=1)
    optimizer.remove_hook('WeightClip')
    x = numpy.random.uniform(-1, 1, (20, 300)).astype('f')
    for _ in range(3):
        optimizer.update(lambda: chainer.functions.sum(model(x) ** 2))
    assert abs(model.l1.W.array).max() > 1
    assert isinstance(model.l1.W.update_rule, InplaceAdamRule)

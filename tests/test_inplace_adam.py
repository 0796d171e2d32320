import io

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import testing

from qnn.backends import cpu_threads
from qnn.optimizers.inplace_adam import InplaceAdam


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

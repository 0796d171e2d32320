import unittest

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.links as L
from chainer import testing

from link_quantized_linear import QuantizedLinear
from weight_clip import WeightClip

from helpers import BACKENDS


class Model(chainer.Chain):

    def __init__(self):
        super(Model, self).__init__()
        with self.init_scope():
            # BN first: a bias right before a BN has a gradient of zero (the
            # batch mean takes it out), which moved it by rounding noise on
            # the CPU and not at all on a GPU
            self.bn = L.BatchNormalization(4)
            self.q = QuantizedLinear(4, 3)  # with a bias
            self.fc = L.Linear(3, 2)  # not quantized

    def forward(self, x):
        return self.fc(self.q(self.bn(x)))


def snapshot(model):
    cpu = chainer.backend.CpuDevice()
    return {name: cpu.send(p.array).copy() for name, p in model.namedparams()}


@testing.inject_backend_tests(None, BACKENDS)
class TestWeightClip(unittest.TestCase):

    def setUp(self):
        self.model = Model()
        # large enough that one SGD step moves everything past +-1
        self.optimizer = chainer.optimizers.SGD(lr=100.0)
        self.optimizer.setup(self.model)
        self.optimizer.add_hook(WeightClip(-1.0, 1.0))

    def test_clips_only_quantized_weights(self, backend_config):
        # W ends inside the bounds although the step pushed it past them:
        # the hook ran after the update (timing 'post')
        self.model.to_device(backend_config.device)
        x = backend_config.get_array(
            numpy.random.uniform(-1, 1, (8, 4)).astype('f'))
        before = snapshot(self.model)

        def loss():
            # against 1, not 0: the BN output sums to 0 over the batch, and
            # so do the linear layers' outputs after it (bias 0), which
            # would leave fc/b a gradient of zero
            return chainer.functions.sum((self.model(x) - 1) ** 2)

        self.optimizer.update(loss)
        after = snapshot(self.model)
        W = after['/q/W']
        assert W.min() >= -1.0 and W.max() <= 1.0
        assert numpy.isin(W, [-1.0, 1.0]).any()  # the clip did act
        # everything else moved freely, past the bounds somewhere
        others = [n for n in after if n != '/q/W']
        assert sorted(others) == ['/bn/beta', '/bn/gamma', '/fc/W', '/fc/b',
                                  '/q/b']
        changed = [n for n in others if not numpy.array_equal(
            after[n], before[n])]
        assert changed == others
        assert any(numpy.abs(after[n]).max() > 1.0 for n in others)


class TestWeightClipArgs(unittest.TestCase):

    def test_bounds(self):
        hook = WeightClip(-0.5, 0.25)
        assert (hook.lower, hook.upper) == (-0.5, 0.25)
        assert hook.timing == 'post'
        assert not hook.call_for_each_param

    def test_bad_bounds(self):
        with pytest.raises(ValueError):
            WeightClip(1.0, -1.0)
        with pytest.raises(ValueError):
            WeightClip(0.0, 0.0)

    def test_custom_bounds_applied(self):
        link = QuantizedLinear(4, 3, initialW=numpy.full((3, 4), 0.9, 'f'))
        opt = chainer.optimizers.SGD(lr=0.0)
        opt.setup(link)
        opt.add_hook(WeightClip(-0.5, 0.25))
        opt.update(lambda: chainer.functions.sum(
            link(numpy.ones((1, 4), 'f'))))
        numpy.testing.assert_array_equal(link.W.array, 0.25)

    def test_uninitialized_link_is_skipped(self):
        link = QuantizedLinear(None, 3)
        opt = chainer.optimizers.SGD()
        opt.setup(link)
        opt.add_hook(WeightClip())
        WeightClip()(opt)  # must not fail on W.array is None
        assert link.W.array is None


testing.run_module(__name__, __file__)

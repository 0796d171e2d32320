"""The shift-based batch normalization link
(qnn.links.shift_batch_normalization): training and evaluation against the
float64 reference, dtypes and parameters."""
import unittest

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.functions as F
from chainer import testing

from qnn.links.shift_batch_normalization import ShiftBatchNormalization

from helpers import BACKENDS, shift_bn_inputs, shift_bn_reference

DTYPES = [numpy.float32, numpy.float64]


@testing.inject_backend_tests(None, BACKENDS[:2])
class TestLink(unittest.TestCase):

    def test_train_and_evaluation(self, backend_config):
        x, gamma, beta, _ = shift_bn_inputs((10, 3), numpy.float32)
        link = ShiftBatchNormalization(3, decay=0.9, eps=1e-4,
                                       initial_gamma=gamma,
                                       initial_beta=beta)
        link.to_device(backend_config.device)
        cpu = chainer.backend.CpuDevice()
        with chainer.using_config('train', True):
            y = cpu.send(link(backend_config.get_array(x)).array)
        expected, mean, var = shift_bn_reference(x, gamma, beta, 1e-4)
        numpy.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
        assert link.N == 1
        avg_mean = cpu.send(link.avg_mean).copy()
        numpy.testing.assert_allclose(avg_mean, 0.1 * mean, rtol=1e-5)
        with chainer.using_config('train', False):
            y = cpu.send(link(backend_config.get_array(x)).array)
        avg_var = cpu.send(link.avg_var)
        expected, _, _ = shift_bn_reference(x, gamma, beta, 1e-4, avg_mean,
                                            avg_var)
        numpy.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
        # evaluation leaves the statistics alone
        numpy.testing.assert_array_equal(cpu.send(link.avg_mean), avg_mean)
        assert link.N == 1


@pytest.mark.parametrize('dtype', DTYPES)
def test_link_dtype_and_parameters(dtype):
    link = ShiftBatchNormalization(5, dtype=dtype)
    assert link.gamma.dtype == dtype and link.beta.dtype == dtype
    assert link.avg_mean.dtype == dtype and link.avg_var.dtype == dtype
    numpy.testing.assert_array_equal(link.gamma.array, 1)
    numpy.testing.assert_array_equal(link.beta.array, 0)
    link.cleargrads()
    x = numpy.random.RandomState(0).normal(size=(6, 5)).astype(dtype)
    y = link(x)
    assert y.dtype == dtype
    F.sum(y * y).backward()
    assert link.gamma.grad.dtype == dtype
    assert numpy.all(numpy.isfinite(link.gamma.grad))
    assert sorted(name for name, _ in link.namedparams()) == \
        ['/beta', '/gamma']
    with pytest.raises(ValueError):
        ShiftBatchNormalization(5, decay=1.0)

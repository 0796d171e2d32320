"""batch_normalization_sign against the two nodes it replaces,
qst.qst(F.batch_normalization(...)): values, gradients, running averages,
bit for bit, with the numba kernels and with the NumPy reference.

The sign's straight-through gradient is not its derivative, so Chainer's
numerical gradient check does not apply; each of the two nodes has its
own (Chainer's tests, tests/test_qst.py), and this one is compared with
their composition, first and second order."""
import unittest
from unittest import mock

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.functions as F
from chainer import testing
from chainer.utils import type_check

from qnn.functions.batch_normalization_sign import batch_normalization_sign
from qnn.functions.batch_normalization_sign import numba_bn_statistics
import qst

from helpers import needs_numba


def two_nodes(x, gamma, beta, mean, var):
    return qst.qst(F.batch_normalization(x, gamma, beta, eps=2e-5,
                                         running_mean=mean,
                                         running_var=var, decay=0.9))


def inputs(shape, dtype, seed=0):
    rng = numpy.random.RandomState(seed)
    c = shape[1]
    x = (rng.normal(size=shape) * 2 + 0.5).astype(dtype)
    x.flat[1] = numpy.nan  # a NaN channel stays NaN
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype)
    beta = rng.uniform(-0.5, 0.5, c).astype(dtype)
    gy = rng.normal(size=shape).astype(dtype)
    return x, gamma, beta, gy


@testing.parameterize(*testing.product({
    'shape': [(100, 40), (7, 3), (5, 4, 6, 7), (3, 2, 1, 1)],
    'dtype': [numpy.float16, numpy.float32, numpy.float64],
    'kernels': ['numba', 'numpy'],
}))
class TestBatchNormalizationSign(unittest.TestCase):

    def setUp(self):
        if self.kernels == 'numpy':
            env = mock.patch.dict('os.environ', {'QNN_CPU_KERNELS': 'numpy'})
            env.start()
            self.addCleanup(env.stop)
        self.x, self.gamma, self.beta, self.gy = inputs(self.shape,
                                                        self.dtype)

    def run_function(self, function, double=False):
        c = self.shape[1]
        x, gamma, beta = [chainer.Variable(a.copy())
                          for a in (self.x, self.gamma, self.beta)]
        mean = numpy.linspace(-1, 1, c).astype(self.dtype)
        var = numpy.linspace(0.5, 2, c).astype(self.dtype)
        y = function(x, gamma, beta, mean, var)
        if double:
            gx, = chainer.grad([y], [x], [chainer.Variable(self.gy)],
                               enable_double_backprop=True)
            F.sum(gx * gx).backward()
        else:
            y.grad = self.gy
            y.backward()
        return [y.array, x.grad, gamma.grad, beta.grad, mean, var]

    def fused(self, x, gamma, beta, mean, var):
        return batch_normalization_sign(x, gamma, beta, 2e-5, mean, var, 0.9)

    def test_bit_for_bit_the_two_nodes(self):
        got = self.run_function(self.fused)
        expected = self.run_function(two_nodes)
        names = 'y gx ggamma gbeta running_mean running_var'.split()
        for a, b, name in zip(got, expected, names):
            assert a.dtype == b.dtype and a.shape == b.shape, name
            numpy.testing.assert_array_equal(a, b, name)

    def test_double_backward_is_the_two_nodes(self):
        got = self.run_function(self.fused, double=True)
        expected = self.run_function(two_nodes, double=True)
        for a, b, name in zip(got[1:3], expected[1:3], ('x', 'gamma')):
            numpy.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3,
                                          err_msg=name)

    def test_values_are_signs(self):
        y = self.run_function(self.fused)[0]
        assert numpy.isin(y[~numpy.isnan(y)], [-1, 1]).all()


class TestBatchNormalizationSignChecks(unittest.TestCase):

    def test_dtype_mismatch(self):
        x = numpy.zeros((4, 3), 'f')
        with self.assertRaises(type_check.InvalidType):
            batch_normalization_sign(x, numpy.ones(3, 'd'), numpy.zeros(3,
                                                                        'd'))

    def test_channel_mismatch(self):
        x = numpy.zeros((4, 3), 'f')
        with self.assertRaises(type_check.InvalidType):
            batch_normalization_sign(x, numpy.ones(2, 'f'),
                                     numpy.zeros(2, 'f'))


@needs_numba
@pytest.mark.parametrize('shape', [(1, 5), (7, 3), (100, 1000)])
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
def test_bn_statistics_equal_numpy(shape, dtype):
    rng = numpy.random.default_rng(3)
    # an offset and a spread that make rounding matter
    x = (rng.normal(0, 1, shape) * 1e3 + 7e3).astype(dtype)
    x[:, 0] = -0.0
    if shape[1] > 2:
        x[-1, 1] = numpy.nan
        x[0, 2] = numpy.inf
    mean, var = numba_bn_statistics(x)
    with numpy.errstate(invalid='ignore'):  # inf - inf
        expected = (x.mean(axis=(0,), dtype=dtype),
                    x.var(axis=(0,), dtype=dtype))
    # bit for bit, -0.0 and NaN included
    bits = 'u{}'.format(x.itemsize)
    for got, want in zip((mean, var), expected):
        numpy.testing.assert_array_equal(got.view(bits), want.view(bits))


testing.run_module(__name__, __file__)

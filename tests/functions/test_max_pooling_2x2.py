import unittest
from unittest import mock

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.functions as F
from chainer import testing

from qnn.functions.max_pooling_2x2 import max_pooling_2x2

from helpers import BACKENDS, needs_numba, with_kernels

SHAPES = [(2, 3, 4, 6), (2, 3, 7, 7), (1, 2, 5, 4), (1, 1, 1, 1)]


def separated(shape, dtype, seed=0):
    # distinct values, far apart for the numerical gradient
    rng = numpy.random.RandomState(seed)
    x = rng.permutation(numpy.prod(shape)).reshape(shape)
    return (x * 0.25 - 2).astype(dtype)


def with_ties(shape, dtype, seed=0):
    # integers in a small range: most windows hold equal maxima, as the
    # sums of +-1 products a binarized convolution outputs do
    rng = numpy.random.RandomState(seed)
    return rng.randint(-2, 3, shape).astype(dtype)


@testing.parameterize(*testing.product({
    'shape': SHAPES,
    'dtype': [numpy.float16, numpy.float32, numpy.float64]}))
@testing.inject_backend_tests(None, BACKENDS)
class TestMaxPooling2x2(testing.FunctionTestCase):

    def setUp(self):
        if self.dtype == numpy.float16:
            self.check_backward_options = {'atol': 5e-2, 'rtol': 5e-2}
            self.check_double_backward_options = {'atol': 5e-2,
                                                  'rtol': 5e-2}

    def generate_inputs(self):
        return separated(self.shape, self.dtype),

    def forward(self, inputs, device):
        x, = inputs
        return max_pooling_2x2(x),

    def forward_expected(self, inputs):
        x, = inputs
        return F.max_pooling_2d(x, 2).array,


@testing.parameterize(*testing.product({
    'shape': SHAPES,
    'dtype': [numpy.float16, numpy.float32, numpy.float64]}))
@testing.inject_backend_tests(None, BACKENDS)
class TestMaxPooling2x2Ties(unittest.TestCase):

    def test_values_and_gradient_equal_chainer_max_pooling(
            self, backend_config):
        # with equal maxima the gradient must go where Chainer's argmax
        # sends it (the first in row-major order), not to each of them
        x = with_ties(self.shape, self.dtype)
        n, c, h, w = self.shape
        gy = numpy.random.RandomState(1).uniform(
            -1, 1, (n, c, (h + 1) // 2, (w + 1) // 2)).astype(self.dtype)
        results = []
        for pool in (max_pooling_2x2, lambda v: F.max_pooling_2d(v, 2)):
            xv = chainer.Variable(backend_config.get_array(x))
            y = pool(xv)
            y.grad = backend_config.get_array(gy)
            y.backward()
            results.append((chainer.backend.CpuDevice().send(y.array),
                            chainer.backend.CpuDevice().send(xv.grad)))
        (y, gx), (y_expected, gx_expected) = results
        assert y.dtype == y_expected.dtype
        numpy.testing.assert_array_equal(y, y_expected)
        numpy.testing.assert_array_equal(gx, gx_expected)
        # each window passes on exactly one gradient
        assert numpy.count_nonzero(gx) <= y.size


class TestInTheConvNet(unittest.TestCase):

    def test_gradients_bit_for_bit_those_of_chainer_pooling(self):
        # the output's memory layout decides the summation order of the
        # batch normalization after it: a copy of Chainer's values in
        # another layout gave gradients that differed in the last bits
        import net
        rng = numpy.random.RandomState(0)
        x = rng.uniform(0, 1, (20, 784)).astype(numpy.float32)
        x[:, :200] = 0  # blank rows, as in MNIST: windows of equal zeros
        t = rng.randint(0, 10, 20).astype(numpy.int32)
        grads = []
        for pool in (lambda h: F.max_pooling_2d(h, 2), max_pooling_2x2):
            with mock.patch('net.max_pooling_2x2', pool):
                numpy.random.seed(0)
                model = chainer.links.Classifier(net.BinaryConvNet())
                model.cleargrads()
                model(x, t).backward()
            grads.append({name: param.grad.copy()
                          for name, param in model.namedparams()})
        for name, grad in grads[0].items():
            numpy.testing.assert_array_equal(grads[1][name], grad, name)


class TestMaxPooling2x2Checks(unittest.TestCase):

    def test_rejects_a_3d_input(self):
        with self.assertRaises(chainer.utils.type_check.InvalidType):
            max_pooling_2x2(numpy.zeros((2, 4, 4), numpy.float32))

    def test_rejects_an_integer_input(self):
        with self.assertRaises(chainer.utils.type_check.InvalidType):
            max_pooling_2x2(numpy.zeros((1, 1, 4, 4), numpy.int32))


@needs_numba
@pytest.mark.parametrize('shape', [(3, 16, 14, 14), (2, 5, 7, 7),
                                   (2, 3, 5, 4), (1, 2, 1, 1)])
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
@pytest.mark.parametrize('channels_last', [False, True])
def test_max_pool_2x2_equals_reference(shape, dtype, channels_last,
                                       monkeypatch):
    from qnn.functions.max_pooling_2x2 import MaxPooling2x2
    from qnn.functions.max_pooling_2x2 import MaxPooling2x2Grad
    rng = numpy.random.default_rng(4)
    # small integers: most windows hold equal maxima; and a NaN
    x = rng.integers(-2, 3, shape).astype(dtype)
    x.reshape(-1)[1] = numpy.nan
    if channels_last:
        x = numpy.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(
            0, 3, 1, 2)
    results = []
    for kernels in (True, False):
        pooling = MaxPooling2x2()
        y, = with_kernels(monkeypatch, kernels, pooling.forward, (x,))
        gy = rng.normal(0, 1, y.shape).astype(dtype) if kernels else gy
        gx, = with_kernels(monkeypatch, kernels,
                           MaxPooling2x2Grad(pooling).forward, (gy,))
        results.append((y, pooling.index, gx))
    (y, index, gx), expected = results
    assert y.flags.c_contiguous
    for got, want, name in zip((y, index, gx), expected, 'y index gx'):
        numpy.testing.assert_array_equal(got, want, name)


testing.run_module(__name__, __file__)

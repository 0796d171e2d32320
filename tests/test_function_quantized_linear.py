import unittest

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import testing
from chainer.utils import type_check

from function_quantized_linear import quantized_linear
from qst import Quantization

from helpers import BACKENDS
from helpers import check_quantized
from helpers import make_weight
from helpers import quantize_reference
from helpers import seed_generators
from helpers import sign_reference
from helpers import tolerance


@testing.parameterize(*testing.product({
    'dtype': [numpy.float16, numpy.float32, numpy.float64],
    'x_shape': [(4, 5), (4, 1, 5)],
    'nobias': [True, False],
    'bits': [1, 2, 32],
    'quantizer': ['linear', 'log'],
}))
@testing.inject_backend_tests(None, BACKENDS)
class TestQuantizedLinearForward(testing.FunctionTestCase):

    # W's gradient is the straight-through estimate, which a numerical
    # gradient cannot see: see TestQuantizedLinearGradients.
    skip_backward_test = True
    skip_double_backward_test = True

    def setUp(self):
        self.check_forward_options = tolerance(self.dtype)

    def generate_inputs(self):
        x = numpy.random.uniform(-1, 1, self.x_shape).astype(self.dtype)
        W = make_weight((3, 5), self.dtype)
        if self.nobias:
            return x, W
        return x, W, numpy.random.uniform(-1, 1, 3).astype(self.dtype)

    def forward(self, inputs, device):
        return quantized_linear(*inputs, quantization=Quantization(
            weight_bits=self.bits, quantizer=self.quantizer)),

    def forward_expected(self, inputs):
        x, W = inputs[:2]
        Wq = quantize_reference(W, self.bits, self.quantizer)
        y = x.reshape(len(x), -1).dot(Wq.T)
        if not self.nobias:
            y = y + inputs[2]
        return y.astype(self.dtype),


@testing.parameterize(*testing.product({
    'dtype': [numpy.float16, numpy.float32, numpy.float64],
}))
@testing.inject_backend_tests(None, BACKENDS)
class TestQuantizedLinearGradXB(testing.FunctionTestCase):

    # With W held fixed the function is linear in x and b, so Chainer's
    # numerical gradient checks (first and second order) apply.

    def setUp(self):
        self.W = make_weight((3, 5), self.dtype)
        if self.dtype == numpy.float16:
            self.check_backward_options = {'atol': 5e-2, 'rtol': 5e-2}
            self.check_double_backward_options = {'atol': 5e-2, 'rtol': 5e-2}
        self.check_forward_options = tolerance(self.dtype)

    def generate_inputs(self):
        x = numpy.random.uniform(-1, 1, (4, 5)).astype(self.dtype)
        b = numpy.random.uniform(-1, 1, 3).astype(self.dtype)
        return x, b

    def forward(self, inputs, device):
        x, b = inputs
        return quantized_linear(x, device.send(self.W), b),

    def forward_expected(self, inputs):
        x, b = inputs
        return (x.dot(sign_reference(self.W).T) + b).astype(self.dtype),


@testing.parameterize(*testing.product({
    'dtype': [numpy.float16, numpy.float32, numpy.float64],
}))
@testing.inject_backend_tests(None, BACKENDS)
class TestQuantizedLinearGradients(unittest.TestCase):

    def test_straight_through_gradients(self, backend_config):
        x = numpy.random.uniform(-1, 1, (4, 5)).astype(self.dtype)
        # weights beyond [-1, 1] too: W's gradient is not masked
        W = make_weight((3, 5), self.dtype) * 3
        b = numpy.random.uniform(-1, 1, 3).astype(self.dtype)
        gy = numpy.random.uniform(-1, 1, (4, 3)).astype(self.dtype)
        xv, Wv, bv = [chainer.Variable(backend_config.get_array(a))
                      for a in (x, W, b)]
        y = quantized_linear(xv, Wv, bv)
        y.grad = backend_config.get_array(gy)
        y.backward()
        cpu = chainer.backend.CpuDevice()
        tol = tolerance(self.dtype)
        for name, got, expected in (
                ('gx', xv.grad, gy.dot(sign_reference(W))),
                ('gW', Wv.grad, gy.T.dot(x)),
                ('gb', bv.grad, gy.sum(axis=0))):
            got = cpu.send(got)
            assert got.dtype == self.dtype, name
            numpy.testing.assert_allclose(
                got, expected.astype(self.dtype), err_msg=name, **tol)

    def test_first_order_backward_equals_graph_backward(self, backend_config):
        # the plain-array backward (no double backprop) must give exactly
        # the gradients of the graph-building one, quantized gradients and
        # errors included
        x = numpy.random.uniform(-1, 1, (6, 5)).astype(self.dtype)
        W = make_weight((3, 5), self.dtype)
        b = numpy.random.uniform(-1, 1, 3).astype(self.dtype)
        gy = numpy.random.uniform(-1, 1, (6, 3)).astype(self.dtype)
        grads = []
        for double in (False, True):
            for error_bits, gradient_bits in ((None, None), (4, 6)):
                # the stochastic gradient rounding draws from xp.random
                seed_generators(7)
                xv, Wv, bv = [chainer.Variable(backend_config.get_array(a))
                              for a in (x, W, b)]
                y = quantized_linear(xv, Wv, bv, quantization=Quantization(
                    error_bits=error_bits, gradient_bits=gradient_bits))
                y.grad = backend_config.get_array(gy)
                y.backward(enable_double_backprop=double)
                grads.append([chainer.backend.CpuDevice().send(v.grad)
                              for v in (xv, Wv, bv)])
        for got, expected in zip(grads[:2], grads[2:]):
            for g, e in zip(got, expected):
                assert g.dtype == e.dtype == self.dtype
                numpy.testing.assert_array_equal(g, e)

    def test_real_weight_is_not_modified(self, backend_config):
        W = make_weight((3, 5), self.dtype)
        Wv = chainer.Variable(backend_config.get_array(W.copy()))
        x = backend_config.get_array(
            numpy.ones((2, 5), self.dtype))
        quantized_linear(x, Wv)
        numpy.testing.assert_array_equal(
            chainer.backend.CpuDevice().send(Wv.array), W)


@testing.parameterize(*testing.product({
    'dtype': [numpy.float16, numpy.float32, numpy.float64],
}))
@testing.inject_backend_tests(None, BACKENDS)
class TestQuantizedGradients(unittest.TestCase):

    def test_gradient_and_error_bits(self, backend_config):
        x = numpy.random.uniform(-1, 1, (8, 20)).astype(self.dtype)
        W = make_weight((6, 20), self.dtype)
        gy = numpy.random.uniform(-1, 1, (8, 6)).astype(self.dtype)
        xv, Wv = [chainer.Variable(backend_config.get_array(a))
                  for a in (x, W)]
        y = quantized_linear(xv, Wv, quantization=Quantization(
            gradient_bits=6, error_bits=4))
        y.grad = backend_config.get_array(gy)
        y.backward()
        cpu = chainer.backend.CpuDevice()
        gy64 = gy.astype(numpy.float64)
        check_quantized(cpu.send(Wv.grad), gy64.T.dot(x), 6)
        check_quantized(cpu.send(xv.grad), gy64.dot(sign_reference(W)), 4)

    def test_stochastic_weight_only_in_training(self, backend_config):
        x = backend_config.get_array(numpy.eye(20, dtype=self.dtype))
        W = backend_config.get_array(make_weight((6, 20), self.dtype))
        two_bits = Quantization(weight_bits=2)
        stochastic = two_bits._replace(stochastic_weights=True)
        deterministic = quantized_linear(x, W, quantization=two_bits).array
        with chainer.using_config('train', False):
            y = quantized_linear(x, W, quantization=stochastic).array
        cpu = chainer.backend.CpuDevice()
        numpy.testing.assert_array_equal(cpu.send(y),
                                         cpu.send(deterministic))
        y = quantized_linear(x, W, quantization=stochastic).array
        # x = I: y is q(W)^T, on the 2-bit grid but not the rounded W
        assert (cpu.send(y) != cpu.send(deterministic)).any()
        assert set(numpy.unique(cpu.send(y))) <= set(
            numpy.array([-1, -1 / 3, 1 / 3, 1], self.dtype))


class TestQuantizedLinearShapes(unittest.TestCase):

    def test_n_batch_axes(self):
        x = numpy.random.uniform(-1, 1, (2, 3, 5)).astype('f')
        W = make_weight((4, 5), numpy.float32)
        y = quantized_linear(x, W, n_batch_axes=2)
        assert y.shape == (2, 3, 4)
        numpy.testing.assert_allclose(
            y.array, x.dot(sign_reference(W).T), rtol=1e-5, atol=1e-6)

    def test_bad_n_batch_axes(self):
        with pytest.raises(ValueError):
            quantized_linear(numpy.zeros((2, 5), 'f'),
                             numpy.zeros((3, 5), 'f'), n_batch_axes=0)


class TestQuantizedLinearTypeErrors(unittest.TestCase):

    def check(self, x, W, b=None):
        with pytest.raises(type_check.InvalidType):
            quantized_linear(x, W, b)

    def test_integer_input(self):
        self.check(numpy.zeros((2, 5), numpy.int32),
                   numpy.zeros((3, 5), numpy.int32))

    def test_dtype_mismatch(self):
        self.check(numpy.zeros((2, 5), numpy.float32),
                   numpy.zeros((3, 5), numpy.float64))

    def test_size_mismatch(self):
        self.check(numpy.zeros((2, 4), 'f'), numpy.zeros((3, 5), 'f'))

    def test_weight_not_2d(self):
        self.check(numpy.zeros((2, 5), 'f'), numpy.zeros((5,), 'f'))

    def test_bad_bias(self):
        self.check(numpy.zeros((2, 5), 'f'), numpy.zeros((3, 5), 'f'),
                   numpy.zeros((4,), 'f'))
        self.check(numpy.zeros((2, 5), 'f'), numpy.zeros((3, 5), 'f'),
                   numpy.zeros((3,), 'd'))


testing.run_module(__name__, __file__)

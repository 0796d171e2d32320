import unittest
from unittest import mock

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.functions as F
from chainer import testing
from chainer.utils import type_check

from function_quantized_linear import quantized_linear
from qnn.functions.quantized_convolution_2d import quantized_convolution_2d
from qst import Quantization

from helpers import BACKENDS
from helpers import check_quantized
from helpers import make_weight
from helpers import needs_numba
from helpers import quantize_reference
from helpers import sign_reference
from helpers import tolerance
from helpers import with_kernels

# small shapes: (n, c_I, h, w) and (c_O, c_I, k_h, k_w)
X_SHAPE = (2, 3, 5, 6)
W_SHAPE = (4, 3, 3, 2)
STRIDES_PADS = [(1, 0), (2, 1), ((1, 2), (2, 0))]


def reference(x, Wq, b=None, **kwargs):
    """Chainer's own convolution (on the CPU) with the quantized filter."""
    return F.convolution_2d(x, Wq, b, **kwargs).array


def conv_gradients(x, Wq, b, gy, **kwargs):
    """Gradients of Chainer's convolution with respect to x, q(W) and b."""
    xv, Wqv, bv = [chainer.Variable(a) for a in (x, Wq, b)]
    y = F.convolution_2d(xv, Wqv, bv, **kwargs)
    y.grad = gy
    y.backward()
    return xv.grad, Wqv.grad, bv.grad


@testing.parameterize(*testing.product({
    'dtype': [numpy.float16, numpy.float32, numpy.float64],
    'stride_pad': STRIDES_PADS,
    'nobias': [True, False],
    'bits': [1, 2, 32],
    'quantizer': ['linear', 'log'],
}))
@testing.inject_backend_tests(None, BACKENDS)
class TestQuantizedConvolution2DForward(testing.FunctionTestCase):

    # W's gradient is the straight-through estimate, which a numerical
    # gradient cannot see: see TestQuantizedConvolution2DGradients.
    skip_backward_test = True
    skip_double_backward_test = True

    def setUp(self):
        self.stride, self.pad = self.stride_pad
        self.check_forward_options = tolerance(self.dtype)

    def generate_inputs(self):
        x = numpy.random.uniform(-1, 1, X_SHAPE).astype(self.dtype)
        W = make_weight(W_SHAPE, self.dtype) * 2  # some beyond [-1, 1]
        if self.nobias:
            return x, W
        return x, W, numpy.random.uniform(-1, 1, W_SHAPE[0]).astype(
            self.dtype)

    def forward(self, inputs, device):
        x, W = inputs[:2]
        b = inputs[2] if len(inputs) == 3 else None
        return quantized_convolution_2d(
            x, W, b, self.stride, self.pad, quantization=Quantization(
                weight_bits=self.bits, quantizer=self.quantizer)),

    def forward_expected(self, inputs):
        x, W = inputs[:2]
        b = inputs[2] if len(inputs) == 3 else None
        Wq = quantize_reference(W, self.bits, self.quantizer)
        return reference(x, Wq, b, stride=self.stride,
                         pad=self.pad).astype(self.dtype),


@testing.parameterize(
    {'kwargs': {'dilate': 2}, 'w_shape': (4, 3, 2, 2)},
    {'kwargs': {'groups': 3}, 'w_shape': (6, 1, 3, 3)},
    {'kwargs': {'cover_all': True, 'stride': 2}, 'w_shape': (4, 3, 2, 2)},
)
@testing.inject_backend_tests(None, BACKENDS)
class TestQuantizedConvolution2DOptions(testing.FunctionTestCase):

    # Chainer's other convolution options pass through to its arithmetic.
    # Each case has an output shape (dilate, cover_all) or a valid filter
    # shape (groups) that differs without its option, so a lost option
    # fails the test.
    skip_backward_test = True
    skip_double_backward_test = True

    def generate_inputs(self):
        x = numpy.random.uniform(-1, 1, X_SHAPE).astype(numpy.float32)
        return x, make_weight(self.w_shape, numpy.float32)

    def forward(self, inputs, device):
        return quantized_convolution_2d(*inputs, **self.kwargs),

    def forward_expected(self, inputs):
        x, W = inputs
        return reference(x, sign_reference(W), **self.kwargs),


@testing.parameterize(*testing.product({
    'dtype': [numpy.float16, numpy.float32, numpy.float64],
    'stride_pad': STRIDES_PADS,
}))
@testing.inject_backend_tests(None, BACKENDS)
class TestQuantizedConvolution2DGradXB(testing.FunctionTestCase):

    # With W held fixed the function is linear in x and b, so Chainer's
    # numerical gradient checks (first and second order) apply.

    def setUp(self):
        self.stride, self.pad = self.stride_pad
        self.W = make_weight(W_SHAPE, self.dtype)
        if self.dtype == numpy.float16:
            self.check_backward_options = {'atol': 5e-2, 'rtol': 5e-2}
            self.check_double_backward_options = {'atol': 5e-2, 'rtol': 5e-2}
        self.check_forward_options = tolerance(self.dtype)

    def generate_inputs(self):
        x = numpy.random.uniform(-1, 1, X_SHAPE).astype(self.dtype)
        b = numpy.random.uniform(-1, 1, W_SHAPE[0]).astype(self.dtype)
        return x, b

    def forward(self, inputs, device):
        x, b = inputs
        return quantized_convolution_2d(
            x, device.send(self.W), b, self.stride, self.pad),

    def forward_expected(self, inputs):
        x, b = inputs
        return reference(x, sign_reference(self.W), b, stride=self.stride,
                         pad=self.pad).astype(self.dtype),


@testing.parameterize(*testing.product({
    'dtype': [numpy.float16, numpy.float32, numpy.float64],
    'stride_pad': STRIDES_PADS,
    'bits': [1, 3],
}))
@testing.inject_backend_tests(None, BACKENDS)
class TestQuantizedConvolution2DGradients(unittest.TestCase):

    def test_straight_through_gradients(self, backend_config):
        stride, pad = self.stride_pad
        x = numpy.random.uniform(-1, 1, X_SHAPE).astype(self.dtype)
        # weights beyond [-1, 1] too: W's gradient is not masked
        W = make_weight(W_SHAPE, self.dtype) * 3
        b = numpy.random.uniform(-1, 1, W_SHAPE[0]).astype(self.dtype)
        xv, Wv, bv = [chainer.Variable(backend_config.get_array(a))
                      for a in (x, W, b)]
        y = quantized_convolution_2d(xv, Wv, bv, stride, pad,
                                     Quantization(weight_bits=self.bits))
        gy = numpy.random.uniform(-1, 1, y.shape).astype(self.dtype)
        y.grad = backend_config.get_array(gy)
        y.backward()
        # Chainer's convolution with q(W) as its own (leaf) weight
        Wq = quantize_reference(W, self.bits, 'linear')
        expected = conv_gradients(x, Wq, b, gy, stride=stride, pad=pad)
        cpu = chainer.backend.CpuDevice()
        tol = tolerance(self.dtype)
        for name, got, want in zip(('gx', 'gW', 'gb'),
                                   (xv.grad, Wv.grad, bv.grad), expected):
            got = cpu.send(got)
            assert got.dtype == self.dtype, name
            numpy.testing.assert_allclose(got, want, err_msg=name, **tol)
        # nothing masked where |W| > 1
        gW = cpu.send(Wv.grad)
        assert (gW[numpy.abs(W) > 1] != 0).any()

    def test_real_weight_is_not_modified(self, backend_config):
        W = make_weight(W_SHAPE, self.dtype)
        Wv = chainer.Variable(backend_config.get_array(W.copy()))
        x = backend_config.get_array(numpy.ones(X_SHAPE, self.dtype))
        quantized_convolution_2d(x, Wv,
                                 quantization=Quantization(self.bits))
        numpy.testing.assert_array_equal(
            chainer.backend.CpuDevice().send(Wv.array), W)


@testing.parameterize(*testing.product({
    'dtype': [numpy.float16, numpy.float32, numpy.float64],
}))
@testing.inject_backend_tests(None, BACKENDS)
class TestQuantizedConvolution2DQuantizedGradients(unittest.TestCase):

    def test_gradient_and_error_bits(self, backend_config):
        x = numpy.random.uniform(-1, 1, (4, 3, 6, 6)).astype(self.dtype)
        W = make_weight((5, 3, 3, 3), self.dtype)
        xv, Wv = [chainer.Variable(backend_config.get_array(a))
                  for a in (x, W)]
        y = quantized_convolution_2d(xv, Wv, pad=1, quantization=Quantization(
            gradient_bits=6, error_bits=4))
        gy = numpy.random.uniform(-1, 1, y.shape).astype(self.dtype)
        y.grad = backend_config.get_array(gy)
        y.backward()
        cpu = chainer.backend.CpuDevice()
        gx, gW, _ = conv_gradients(
            x.astype(numpy.float64), sign_reference(W).astype(numpy.float64),
            numpy.zeros(len(W)), gy.astype(numpy.float64), pad=1)
        check_quantized(cpu.send(Wv.grad), gW, 6)
        check_quantized(cpu.send(xv.grad), gx, 4)

    def test_stochastic_weight_only_in_training(self, backend_config):
        # a 1x1 filter applied to one-hot channels reads q(W) back
        W = make_weight((6, 20, 1, 1), self.dtype)
        x = numpy.eye(20, dtype=self.dtype)[:, :, None, None]
        x, W = backend_config.get_array(x), backend_config.get_array(W)
        cpu = chainer.backend.CpuDevice()
        two_bits = Quantization(weight_bits=2)
        stochastic = two_bits._replace(stochastic_weights=True)
        deterministic = cpu.send(quantized_convolution_2d(
            x, W, quantization=two_bits).array)
        with chainer.using_config('train', False):
            y = quantized_convolution_2d(x, W, quantization=stochastic).array
        numpy.testing.assert_array_equal(cpu.send(y), deterministic)
        y = cpu.send(
            quantized_convolution_2d(x, W, quantization=stochastic).array)
        assert (y != deterministic).any()
        assert set(numpy.unique(y)) <= set(
            numpy.array([-1, -1 / 3, 1 / 3, 1], self.dtype))


@testing.parameterize(*testing.product({
    'bits': [1, 2, 32],
    'quantizer': ['linear', 'log'],
    'gradient_error_bits': [(None, None), (6, 4)],
}))
class TestSameAsDenseLayer(unittest.TestCase):

    def test_1x1_convolution_is_the_dense_layer(self):
        # A 1x1 convolution of a 1x1 image is quantized_linear: forward and
        # all gradients must agree, the stochastic gradient rounding
        # included (same draws from the same seed).
        gradient_bits, error_bits = self.gradient_error_bits
        options = {'quantization': Quantization(
            weight_bits=self.bits, quantizer=self.quantizer,
            gradient_bits=gradient_bits, error_bits=error_bits)}
        x = numpy.random.uniform(-1, 1, (8, 20))
        W = make_weight((6, 20), numpy.float64) * 2
        b = numpy.random.uniform(-1, 1, 6)
        gy = numpy.random.uniform(-1, 1, (8, 6))
        results = []
        for f, shape in ((quantized_linear, lambda a: a),
                         (quantized_convolution_2d,
                          lambda a: a.reshape(a.shape + (1, 1)))):
            xv, Wv, bv = [chainer.Variable(a) for a in (shape(x), shape(W),
                                                        b)]
            y = f(xv, Wv, bv, **options)
            y.grad = shape(gy)
            numpy.random.seed(1)
            y.backward()
            results.append([a.reshape(len(a), -1) for a in (
                y.array, xv.grad, Wv.grad)] + [bv.grad])
        for name, dense, conv in zip(('y', 'gx', 'gW', 'gb'), *results):
            numpy.testing.assert_allclose(conv, dense, rtol=1e-12,
                                          atol=1e-12, err_msg=name)


class TestQuantizedConvolution2DTypeErrors(unittest.TestCase):

    def check(self, x, W, b=None):
        with pytest.raises(type_check.InvalidType):
            quantized_convolution_2d(x, W, b)

    def test_integer_input(self):
        self.check(numpy.zeros(X_SHAPE, numpy.int32),
                   numpy.zeros(W_SHAPE, numpy.int32))

    def test_dtype_mismatch(self):
        self.check(numpy.zeros(X_SHAPE, numpy.float32),
                   numpy.zeros(W_SHAPE, numpy.float64))

    def test_channel_mismatch(self):
        self.check(numpy.zeros((2, 2, 5, 5), 'f'), numpy.zeros(W_SHAPE, 'f'))

    def test_not_4d(self):
        self.check(numpy.zeros(X_SHAPE[1:], 'f'), numpy.zeros(W_SHAPE, 'f'))
        self.check(numpy.zeros(X_SHAPE, 'f'), numpy.zeros(W_SHAPE[:3], 'f'))

    def test_bad_bias(self):
        self.check(numpy.zeros(X_SHAPE, 'f'), numpy.zeros(W_SHAPE, 'f'),
                   numpy.zeros((W_SHAPE[0] + 1,), 'f'))
        self.check(numpy.zeros(X_SHAPE, 'f'), numpy.zeros(W_SHAPE, 'f'),
                   numpy.zeros((W_SHAPE[0],), 'd'))


class TestQuantizedConvolution2DOptionErrors(unittest.TestCase):

    def test_bad_quantization_options(self):
        x = numpy.zeros(X_SHAPE, 'f')
        W = numpy.zeros(W_SHAPE, 'f')
        with pytest.raises(TypeError):
            quantized_convolution_2d(x, W, quantization=2)
        with pytest.raises(TypeError):
            quantized_convolution_2d(x, W, bits=2)

    def test_unknown_keyword(self):
        with pytest.raises(TypeError):
            quantized_convolution_2d(numpy.zeros(X_SHAPE, 'f'),
                                     numpy.zeros(W_SHAPE, 'f'), dilation=2)


@testing.parameterize(*testing.product({
    'kernels': ['numba', 'numpy'],
    'case': [((3, 16, 14, 14), (8, 16, 3, 3), {'pad': 1}),
             (X_SHAPE, W_SHAPE, {'stride': 2, 'pad': 1}),
             (X_SHAPE, W_SHAPE, {'stride': (1, 2), 'pad': (2, 0),
                                 'dilate': 2}),
             (X_SHAPE, W_SHAPE, {'stride': 2, 'cover_all': True})],
}))
class TestPatchesOnTheCPU(unittest.TestCase):

    # The CPU path (im2col once, one matrix product, col2im in backward)
    # against Chainer's convolution: with a binarized input every sum is
    # exact, so outputs and gradients are the same to the last bit.

    def setUp(self):
        if self.kernels == 'numpy':
            self.env = mock.patch.dict('os.environ',
                                       {'QNN_CPU_KERNELS': 'numpy'})
            self.env.start()
            self.addCleanup(self.env.stop)
        x_shape, w_shape, self.kwargs = self.case
        rng = numpy.random.RandomState(4)
        self.x = numpy.where(rng.rand(*x_shape) < 0.5, -1, 1).astype('f')
        self.W = make_weight(w_shape, numpy.float32)

    def run_both(self, x):
        outputs = []
        for function in (quantized_convolution_2d, F.convolution_2d):
            xv = chainer.Variable(x.copy())
            W = self.W if function is quantized_convolution_2d \
                else sign_reference(self.W)
            Wv = chainer.Variable(W.copy())
            y = function(xv, Wv, **self.kwargs)
            y.grad = numpy.random.RandomState(5).normal(
                size=y.shape).astype('f')
            y.backward()
            outputs.append((y.array, xv.grad, Wv.grad))
        return outputs

    def test_binarized_input_bit_for_bit_chainer(self):
        got, expected = self.run_both(self.x)
        for a, b, name in zip(got, expected, ('y', 'gx', 'gW')):
            numpy.testing.assert_array_equal(a, b, name)

    def test_real_input_close_to_chainer(self):
        # the sums of y run in another order: equal up to rounding
        x = numpy.random.RandomState(6).uniform(
            -1, 1, self.x.shape).astype('f')
        got, expected = self.run_both(x)
        for a, b, name in zip(got, expected, ('y', 'gx', 'gW')):
            numpy.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5,
                                          err_msg=name)

    def test_patches_kept_for_backward_and_freed(self):
        y = quantized_convolution_2d(chainer.Variable(self.x),
                                     chainer.Variable(self.W), **self.kwargs)
        node = y.creator
        assert node.col.flags.c_contiguous
        assert node.col.shape == (
            y.shape[0] * y.shape[2] * y.shape[3], self.W[0].size)
        y.grad = numpy.ones_like(y.array)
        y.backward()
        assert node.col is None

    def test_second_backward_of_a_retained_graph(self):
        # the patches are gone after the first backward: Chainer's way
        # gives the same gradients
        xv = chainer.Variable(self.x)
        Wv = chainer.Variable(self.W)
        y = quantized_convolution_2d(xv, Wv, **self.kwargs)
        loss = chainer.functions.sum(y * y)
        loss.backward()
        first = xv.grad.copy(), Wv.grad.copy()
        xv.cleargrad()
        Wv.cleargrad()
        loss.backward()
        numpy.testing.assert_array_equal(xv.grad, first[0])
        numpy.testing.assert_array_equal(Wv.grad, first[1])


# (x shape, kh, kw, stride, pad, dilate, cover_all) of the patch kernels
PATCHES = [
    ((3, 16, 14, 14), 3, 3, (1, 1), (1, 1), (1, 1), False),
    ((2, 1, 28, 28), 3, 3, (1, 1), (1, 1), (1, 1), False),
    ((2, 3, 7, 6), 3, 2, (2, 1), (1, 0), (1, 1), False),
    ((2, 3, 7, 7), 2, 3, (1, 2), (2, 0), (2, 1), False),
    ((2, 3, 7, 7), 3, 3, (2, 2), (1, 1), (1, 1), True),
]


@needs_numba
@pytest.mark.parametrize('case', PATCHES)
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
@pytest.mark.parametrize('channels_last', [False, True])
def test_im2col_and_col2im_equal_references(case, dtype, channels_last,
                                            monkeypatch):
    from chainer.utils import conv
    from qnn.functions.quantized_convolution_2d import col2im
    from qnn.functions.quantized_convolution_2d import im2col
    shape, kh, kw, (sy, sx), (ph, pw), (dy, dx), cover_all = case
    rng = numpy.random.default_rng(3)
    x = rng.normal(0, 1, shape).astype(dtype)
    if channels_last:  # a strided input, as a convolution's output is
        x = numpy.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(
            0, 3, 1, 2)
    args = (x, kh, kw, sy, sx, ph, pw, dy, dx, cover_all)
    (col, out), (expected, out_expected) = [
        with_kernels(monkeypatch, k, im2col, *args) for k in (True, False)]
    assert out == out_expected and col.flags.c_contiguous
    numpy.testing.assert_array_equal(col, expected)
    # the columns are Chainer's im2col_cpu, (c, ky, kx) made (ky, kx, c)
    chainer_col = conv.im2col_cpu(x, kh, kw, sy, sx, ph, pw,
                                  cover_all=cover_all, dy=dy, dx=dx)
    numpy.testing.assert_array_equal(
        col, chainer_col.transpose(0, 4, 5, 2, 3, 1).reshape(col.shape))
    g = rng.normal(0, 1, col.shape).astype(dtype)
    gx, gx_expected = [
        with_kernels(monkeypatch, k, col2im, g, shape, kh, kw, sy, sx, ph, pw,
                     dy, dx, out) for k in (True, False)]
    assert gx.flags.c_contiguous
    numpy.testing.assert_array_equal(gx, gx_expected)
    # the same sums, in the same order, as Chainer's col2im_cpu
    g6 = g.reshape(shape[0], out[0], out[1], kh, kw, shape[1])
    numpy.testing.assert_array_equal(gx, conv.col2im_cpu(
        g6.transpose(0, 5, 3, 4, 1, 2), sy, sx, ph, pw, shape[2], shape[3],
        dy, dx))


testing.run_module(__name__, __file__)

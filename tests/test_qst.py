import os
import unittest

import numpy
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import testing
from chainer.utils import type_check

import qst

from helpers import BACKENDS
from helpers import KERNEL_SIZES
from helpers import levels_reference
from helpers import needs_numba
from helpers import quantize_reference
from helpers import sign_reference

# Values where a sign or its straight-through mask is easy to get wrong.
EDGES = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1.001, -1.001, 0.999, -0.999,
         1e-7, -1e-7, 100.0, -100.0, 6e4, -6e4]


def mask_reference(x):
    return (numpy.abs(x.astype(numpy.float64)) <= 1).astype(x.dtype)


def make_input(shape, dtype):
    x = numpy.random.uniform(-2, 2, shape).astype(dtype)
    flat = x.reshape(-1)
    n = min(len(EDGES), flat.size)
    flat[:n] = numpy.asarray(EDGES[:n], dtype=dtype)
    numpy.random.shuffle(flat)
    return flat.reshape(shape)


@testing.parameterize(*testing.product({
    'shape': [(3, 4), (2, 3, 5), ()],
    'dtype': [numpy.float16, numpy.float32, numpy.float64],
    'bits': [1, 2, 4, 32],
    'quantizer': ['linear', 'log'],
}))
@testing.inject_backend_tests(None, BACKENDS)
class TestQST(testing.FunctionTestCase):

    # A numerical gradient sees the sign's zero derivative, not the
    # straight-through estimate: backward is checked by test_ste_backward.
    skip_backward_test = True
    skip_double_backward_test = True

    def setUp(self):
        self.check_forward_options = {'atol': 0, 'rtol': 0}

    def generate_inputs(self):
        return make_input(self.shape, self.dtype),

    def forward(self, inputs, device):
        x, = inputs
        return qst.qst(x, self.bits, self.quantizer),

    def forward_expected(self, inputs):
        x, = inputs
        return quantize_reference(x, self.bits, self.quantizer),

    def check_forward_outputs(self, outputs, expected_outputs):
        testing.FunctionTestCase.check_forward_outputs(
            self, outputs, expected_outputs)
        y = chainer.backend.CpuDevice().send(outputs[0])
        assert y.dtype == self.dtype
        if self.bits < 32:
            levels = levels_reference(self.bits, self.quantizer, self.dtype)
            assert set(numpy.unique(y)) <= set(levels.astype(self.dtype))

    def test_ste_backward(self, backend_config):
        x_cpu = make_input(self.shape, self.dtype)
        gy_cpu = numpy.random.uniform(-1, 1, self.shape).astype(self.dtype)
        x = chainer.Variable(backend_config.get_array(x_cpu))
        y = qst.qst(x, self.bits, self.quantizer)
        y.grad = backend_config.get_array(gy_cpu)
        y.backward()
        gx = chainer.backend.CpuDevice().send(x.grad)
        assert gx.dtype == self.dtype
        numpy.testing.assert_array_equal(gx, gy_cpu * mask_reference(x_cpu))

    def test_ste_backward_same_with_double_backprop(self, backend_config):
        # the plain-array first-order backward and the graph-building one
        x_cpu = make_input(self.shape, self.dtype)
        gy_cpu = numpy.random.uniform(-1, 1, self.shape).astype(self.dtype)
        grads = []
        for double in (False, True):
            x = chainer.Variable(backend_config.get_array(x_cpu))
            y = qst.qst(x, self.bits, self.quantizer)
            y.grad = backend_config.get_array(gy_cpu)
            y.backward(enable_double_backprop=double)
            grads.append(chainer.backend.CpuDevice().send(x.grad))
        assert grads[0].dtype == grads[1].dtype == self.dtype
        numpy.testing.assert_array_equal(grads[0], grads[1])


@testing.parameterize(*testing.product({
    'dtype': [numpy.float32, numpy.float64],
}))
@testing.inject_backend_tests(None, BACKENDS[:2])  # NumPy and CuPy arrays
class TestExactPowersOfTwo(unittest.TestCase):
    # CuPy's exp2 of a float64 was an ulp below 2^-4 on an H200: the log
    # levels and the gradient scale must be exact powers on every backend

    def test_exp2_of_integers(self, backend_config):
        k = numpy.arange(-60, 61).astype(self.dtype)
        y = qst._exp2(backend_config.get_array(k))
        expected = numpy.array([2.0 ** int(i) for i in k], self.dtype)
        numpy.testing.assert_array_equal(
            chainer.backend.CpuDevice().send(y), expected)

    def test_exp2_of_infinities_and_nan(self, backend_config):
        e = numpy.array([numpy.inf, -numpy.inf, numpy.nan], self.dtype)
        y = chainer.backend.CpuDevice().send(
            qst._exp2(backend_config.get_array(e)))
        numpy.testing.assert_array_equal(y, [numpy.inf, 0, numpy.nan])

    def test_log_levels_quantize_to_themselves(self, backend_config):
        levels = levels_reference(8, 'log', self.dtype).astype(self.dtype)
        y = qst.quantize(backend_config.get_array(levels), 8, 'log')
        numpy.testing.assert_array_equal(
            chainer.backend.CpuDevice().send(y), levels)


class TestQSTEdges(unittest.TestCase):

    def test_zero_is_plus_one(self):
        y = qst.qst(numpy.array([0.0, -0.0], numpy.float32)).array
        numpy.testing.assert_array_equal(y, [1, 1])
        assert not numpy.signbit(y).any()

    def test_mask_is_inclusive_at_one(self):
        x = chainer.Variable(numpy.array(
            [-1.0, numpy.nextafter(numpy.float32(-1), numpy.float32(-2)),
             1.0, numpy.nextafter(numpy.float32(1), numpy.float32(2))],
            numpy.float32))
        y = qst.qst(x)
        y.grad = numpy.full(4, 3.0, numpy.float32)
        y.backward()
        numpy.testing.assert_array_equal(x.grad, [3, 0, 3, 0])

    def test_infinities(self):
        x = chainer.Variable(numpy.array([numpy.inf, -numpy.inf], 'f'))
        y = qst.qst(x)
        numpy.testing.assert_array_equal(y.array, [1, -1])
        y.grad = numpy.ones(2, 'f')
        y.backward()
        numpy.testing.assert_array_equal(x.grad, [0, 0])

    def test_nan_stays_nan(self):
        # a diverged value must reach the loss, not become a valid +-1
        x = chainer.Variable(numpy.array([numpy.nan, 0.5], 'f'))
        y = qst.qst(x)
        assert numpy.isnan(y.array[0]) and y.array[1] == 1
        y.grad = numpy.ones(2, 'f')
        y.backward()
        numpy.testing.assert_array_equal(x.grad, [0, 1])

    def test_quantize_does_not_modify_input(self):
        x = make_input((5, 7), numpy.float32)
        x0 = x.copy()
        qst.quantize(x)
        numpy.testing.assert_array_equal(x, x0)

    def test_gradient_flows_through_chain(self):
        # qst(qst(x)): the inner output is +-1, inside the mask, so the
        # gradient of the composition is that of the inner one.
        x = chainer.Variable(numpy.array([-3.0, -0.2, 0.0, 0.7, 2.0], 'f'))
        y = chainer.functions.sum(qst.qst(qst.qst(x)))
        y.backward()
        numpy.testing.assert_array_equal(x.grad, [0, 1, 1, 1, 0])


@testing.parameterize(*testing.product({
    'dtype': [numpy.int32, numpy.int64, numpy.bool_, numpy.uint8],
}))
class TestQSTTypeError(unittest.TestCase):

    def test_non_float_input(self):
        x = numpy.zeros((2, 3), self.dtype)
        with pytest.raises(type_check.InvalidType):
            qst.qst(x)


class TestBits(unittest.TestCase):

    def test_default_is_one(self):
        assert qst.QuantizeSTE().bits == 1

    def test_none_is_full_precision(self):
        assert qst.check_bits(None) == 32
        assert qst.check_gradient_bits(None) == 32

    def test_unsupported_bits(self):
        for bits in (0, 33, 64, -1):
            with pytest.raises(ValueError, match='bits={}'.format(bits)):
                qst.qst(numpy.zeros(3, 'f'), bits=bits)

    def test_unsupported_gradient_bits(self):
        for bits in (0, 1, 33):
            with pytest.raises(ValueError, match='bits={}'.format(bits)):
                qst.quantize_gradient(numpy.ones(3, 'f'), bits)

    def test_non_integer_bits(self):
        for bits in (1.0, '1', True):
            with pytest.raises(TypeError):
                qst.check_bits(bits)

    def test_unknown_quantizer(self):
        with pytest.raises(ValueError, match='ternary'):
            qst.qst(numpy.zeros(3, 'f'), quantizer='ternary')


class TestQuantization(unittest.TestCase):

    def test_default_is_the_binarized_network(self):
        q = qst.Quantization()
        assert q == (1, 1, 'linear', False, False, 32, 32)
        assert qst.Quantization.checked(None) == q

    def test_none_bits_are_full_precision(self):
        q = qst.Quantization(weight_bits=None, error_bits=None)
        assert (q.weight_bits, q.error_bits) == (32, 32)

    def test_every_field_checked_when_made(self):
        for kwargs in ({'weight_bits': 0}, {'activation_bits': 33},
                       {'gradient_bits': 1}, {'error_bits': 40},
                       {'quantizer': 'ternary'}):
            with pytest.raises(ValueError):
                qst.Quantization(**kwargs)
        for bits in (2.0, '2', True):
            with pytest.raises(TypeError):
                qst.Quantization(weight_bits=bits)

    def test_replace_and_make_are_checked_too(self):
        q = qst.Quantization(weight_bits=2)
        assert q._replace(activation_bits=3).activation_bits == 3
        with pytest.raises(ValueError):
            q._replace(activation_bits=0)
        with pytest.raises(ValueError):
            qst.Quantization._make((1, 0, 'linear', False, False, 32, 32))

    def test_of_options(self):
        import argparse
        options = argparse.Namespace(
            weight_bits=2, activation_bits=3, quantizer='log',
            stochastic_weights=True, stochastic_activations=False,
            gradient_bits=6, error_bits=8, unit=100)
        assert qst.Quantization.of(options) == (2, 3, 'log', True, False, 6,
                                                8)

    def test_checked_refuses_other_values(self):
        with pytest.raises(TypeError):
            qst.Quantization.checked({'weight_bits': 2})


@needs_numba
@pytest.mark.parametrize('n', KERNEL_SIZES)
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
def test_sign_equals_reference(n, dtype):
    x = numpy.random.default_rng(1).normal(0, 1, n).astype(dtype)
    x[:4] = [0.0, -0.0, numpy.nan, numpy.inf]
    y = numpy.full_like(x, 7)
    qst.numba_sign(x, y)
    expected = numpy.sign(x)
    expected += expected == 0
    numpy.testing.assert_array_equal(y, expected)
    assert y[0] == 1 and y[1] == 1 and numpy.isnan(y[2])


@needs_numba
def test_qst_sign_uses_kernel_and_matches_numpy_path(monkeypatch):
    x = numpy.random.default_rng(2).normal(0, 1, (300, 200)).astype('f')
    x[0, :2] = [0.0, numpy.nan]
    calls = []
    kernel = qst.numba_sign
    monkeypatch.setattr(qst, 'numba_sign',
                        lambda x, y: calls.append(1) or kernel(x, y))
    got = qst.quantize(x, 1)
    assert calls == [1]
    monkeypatch.setenv('QNN_CPU_KERNELS', 'numpy')
    expected = qst.quantize(x, 1)
    assert calls == [1]  # the NumPy path this time
    numpy.testing.assert_array_equal(got, expected)


@needs_numba
@pytest.mark.parametrize('n', KERNEL_SIZES)
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
def test_ste_equals_reference(n, dtype):
    rng = numpy.random.default_rng(4)
    x = rng.uniform(-2, 2, n).astype(dtype)
    gy = rng.normal(0, 1, n).astype(dtype)
    x[:6] = [1.0, -1.0, numpy.nan, 0.0, 3.0, -3.0]
    gy[4:8] = [numpy.nan, -0.5, numpy.inf, -0.0]
    got = qst.numba_ste(x, gy)
    with numpy.errstate(invalid='ignore'):  # inf * 0 is NaN, on purpose
        expected = gy * qst.ste_mask(x)
    assert got.dtype == dtype
    numpy.testing.assert_array_equal(got, expected)
    # the sign of the zeros too (0 * -0.5 is -0.0)
    numpy.testing.assert_array_equal(numpy.signbit(got),
                                     numpy.signbit(expected))


# --- properties (hypothesis draws the inputs) ----------------------------

DTYPES = [numpy.float16, numpy.float32, numpy.float64]

# CI replays the same examples every run; elsewhere each run explores anew.
PROPERTIES = settings(max_examples=150, deadline=None,
                      derandomize=bool(os.environ.get('CI')))


@st.composite
def cases(draw, max_bits=8, finite=False):
    """(x, bits, quantizer): x of any float dtype and shape, finite or
    infinite values (never NaN)."""
    dtype = draw(st.sampled_from(DTYPES))
    x = draw(hnp.arrays(
        dtype, hnp.array_shapes(min_dims=0, max_dims=2, max_side=30),
        elements=st.floats(allow_nan=False, allow_infinity=not finite,
                           width=numpy.dtype(dtype).itemsize * 8)))
    bits = draw(st.integers(1, max_bits))
    quantizer = draw(st.sampled_from(qst.QUANTIZERS))
    return x, bits, quantizer


@PROPERTIES
@given(cases())
def test_on_the_documented_grid(case):
    x, bits, quantizer = case
    y = qst.quantize(x, bits, quantizer)
    assert y.shape == x.shape and y.dtype == x.dtype
    levels = set(levels_reference(bits, quantizer, x.dtype).astype(x.dtype))
    assert set(numpy.unique(y)) <= levels


@PROPERTIES
@given(cases())
def test_at_most_two_to_the_bits_values(case):
    x, bits, quantizer = case
    assert len(numpy.unique(qst.quantize(x, bits, quantizer))) <= 2 ** bits


@PROPERTIES
@given(cases())
def test_inside_minus_one_one(case):
    x, bits, quantizer = case
    y = qst.quantize(x, bits, quantizer)
    assert ((-1 <= y) & (y <= 1)).all()


@PROPERTIES
@given(cases())
def test_idempotent(case):
    x, bits, quantizer = case
    y = qst.quantize(x, bits, quantizer)
    numpy.testing.assert_array_equal(qst.quantize(y, bits, quantizer), y)


@PROPERTIES
@given(cases())
def test_monotone_non_decreasing(case):
    x, bits, quantizer = case
    y = qst.quantize(numpy.sort(x.reshape(-1)), bits, quantizer)
    assert (numpy.diff(y.astype(numpy.float64)) >= 0).all()


@PROPERTIES
@given(cases(max_bits=1))
def test_one_bit_is_sign(case):
    x, _, quantizer = case
    numpy.testing.assert_array_equal(
        qst.quantize(x, 1, quantizer), sign_reference(x))


@PROPERTIES
@given(cases())
def test_32_bits_is_identity_inside_the_clip(case):
    x, _, quantizer = case
    for bits in (32, None):
        y = qst.quantize(x, bits, quantizer)
        numpy.testing.assert_array_equal(y, numpy.clip(x, -1, 1))
        inside = numpy.abs(x) <= 1
        numpy.testing.assert_array_equal(y[inside], x[inside])


@PROPERTIES
@given(cases())
def test_stochastic_values_are_on_the_grid(case):
    x, bits, quantizer = case
    y = qst.quantize(x, bits, quantizer, stochastic=True)
    levels = set(levels_reference(bits, quantizer, x.dtype).astype(x.dtype))
    assert set(numpy.unique(y)) <= levels


@PROPERTIES
@given(cases(max_bits=4, finite=True))
def test_ste_mask_for_every_quantizer(case):
    x, bits, quantizer = case
    for stochastic in (False, True):
        v = chainer.Variable(x)
        y = qst.qst(v, bits, quantizer, stochastic)
        y.grad = numpy.full(x.shape, 2, x.dtype)
        y.backward()
        numpy.testing.assert_array_equal(
            v.grad, numpy.where(numpy.abs(x) <= 1, 2, 0).astype(x.dtype))


# Inputs with clip(x, -1, 1), the mean a stochastic quantizer must reach,
# mostly off the levels of the deterministic one.
MEAN_POINTS = numpy.array([-1.7, -0.9, -0.55, -0.3, 0.0, 0.13, 0.3, 0.75,
                           0.95, 1.0, 3.0])
DRAWS = 20000


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('bits', [1, 2, 4])
def test_stochastic_linear_mean_is_the_clipped_input(dtype, bits):
    numpy.random.seed(0)
    x = numpy.broadcast_to(MEAN_POINTS.astype(dtype), (DRAWS, 11))
    y = qst.quantize(numpy.ascontiguousarray(x), bits, stochastic=True)
    target = numpy.clip(MEAN_POINTS.astype(dtype).astype(numpy.float64),
                        -1, 1)
    # a draw is one of two levels 2/(2^k - 1) apart: its standard deviation
    # is at most half of that, and that of the mean 1/sqrt(DRAWS) of it
    std_of_mean = 1.0 / (2 ** bits - 1) / DRAWS ** 0.5
    error = numpy.abs(y.astype(numpy.float64).mean(axis=0) - target)
    assert (error < 5 * std_of_mean).all(), error
    # the tolerance excludes the deterministic quantizer: the test could
    # not pass if stochastic rounding were off
    deterministic = qst.quantize(MEAN_POINTS.astype(dtype), bits)
    moved = numpy.abs(deterministic - target) > 5 * std_of_mean
    assert moved.sum() >= 6


@pytest.mark.parametrize('dtype', DTYPES)
def test_stochastic_log_mean_is_the_input_inside_the_range(dtype):
    numpy.random.seed(0)
    points = numpy.array([-0.9, -0.3, -0.2, 0.13, 0.3, 0.7, 1.0])
    x = numpy.broadcast_to(points.astype(dtype), (DRAWS, len(points)))
    y = qst.quantize(numpy.ascontiguousarray(x), 4, 'log', stochastic=True)
    # two levels 2^e, 2^(e + 1) apart by at most 2^e <= |x|
    std_of_mean = numpy.abs(points) / DRAWS ** 0.5
    error = numpy.abs(y.astype(numpy.float64).mean(axis=0)
                      - points.astype(dtype))
    assert (error < 5 * std_of_mean).all(), error


def test_stochastic_is_seedable():
    x = numpy.random.uniform(-1, 1, 1000).astype(numpy.float32)
    numpy.random.seed(3)
    a = qst.quantize(x, 2, stochastic=True)
    numpy.random.seed(3)
    b = qst.quantize(x, 2, stochastic=True)
    c = qst.quantize(x, 2, stochastic=True)
    numpy.testing.assert_array_equal(a, b)
    assert (a != c).any()


@pytest.mark.parametrize('quantizer', qst.QUANTIZERS)
@pytest.mark.parametrize('bits', [1, 2, 4])
def test_stochastic_is_deterministic_in_test_mode(quantizer, bits):
    x = numpy.random.uniform(-1.5, 1.5, 1000).astype(numpy.float32)
    state = numpy.random.get_state()
    with chainer.using_config('train', False):
        y = qst.qst(x, bits, quantizer, stochastic=True).array
    numpy.testing.assert_array_equal(y, qst.quantize(x, bits, quantizer))
    # no random number was drawn
    numpy.testing.assert_array_equal(numpy.random.get_state()[1], state[1])
    with chainer.using_config('train', True):
        y = qst.qst(x, bits, quantizer, stochastic=True).array
    assert (y != qst.quantize(x, bits, quantizer)).any()


@st.composite
def gradients(draw):
    dtype = draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from([1e-6, 1e-3, 1.0, 100.0]))
    g = draw(hnp.arrays(
        dtype, hnp.array_shapes(min_dims=1, max_dims=2, max_side=30),
        elements=st.floats(-1, 1, width=numpy.dtype(dtype).itemsize * 8)))
    g = (g * dtype(scale)).astype(dtype)
    bits = draw(st.integers(2, 8))
    return g, bits


@PROPERTIES
@given(gradients())
def test_gradient_quantization_keeps_sign_and_bounds_error(case):
    g, bits = case
    q = qst.quantize_gradient(g, bits)
    assert q.shape == g.shape and q.dtype == g.dtype
    # every element keeps its sign or becomes zero; zeros stay zero
    assert ((numpy.sign(q) == numpy.sign(g)) | (q == 0)).all()
    assert (q[g == 0] == 0).all()
    amax = numpy.abs(g.astype(numpy.float64)).max()
    m = 2 ** (bits - 1) - 1
    error = numpy.abs(q.astype(numpy.float64) - g.astype(numpy.float64))
    # one step of the grid (<= 2 max|g| / m), plus float16 rounding
    assert (error <= 2 * amax / m * (1 + 1e-3) + 1e-7 * amax).all()
    # at most 2m + 1 values: -m..m steps of one scale
    assert len(numpy.unique(q)) <= 2 * m + 1


def test_gradient_quantization_is_unbiased():
    numpy.random.seed(0)
    g = numpy.array([0.01, -0.2, 0.37, 1.0, -0.05], numpy.float32)
    q = numpy.stack([qst.quantize_gradient(g, 4) for _ in range(DRAWS)])
    # step 1/7 (scale 1, m = 7): std of a draw <= 1/14
    std_of_mean = 1 / 14 / DRAWS ** 0.5
    error = numpy.abs(q.astype(numpy.float64).mean(axis=0) - g)
    assert (error < 5 * std_of_mean).all(), error


def test_gradient_32_bits_is_the_gradient():
    g = numpy.random.randn(10).astype(numpy.float32)
    assert qst.quantize_gradient(g, 32) is g


def test_gradient_nan_propagates():
    g = numpy.array([0.5, numpy.nan, 0.1], numpy.float32)
    assert numpy.isnan(qst.quantize_gradient(g, 6)).all()


testing.run_module(__name__, __file__)

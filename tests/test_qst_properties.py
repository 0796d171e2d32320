"""Property tests of the quantizers of qst (hypothesis draws the inputs)."""
import os

import numpy
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

import qst
from test_qst import levels_reference
from test_qst import sign_reference

DTYPES = [numpy.float16, numpy.float32, numpy.float64]

# CI replays the same examples every run; elsewhere each run explores anew.
settings.register_profile('qst', max_examples=150, deadline=None,
                          derandomize=bool(os.environ.get('CI')))
settings.load_profile('qst')


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


@given(cases())
def test_on_the_documented_grid(case):
    x, bits, quantizer = case
    y = qst.quantize(x, bits, quantizer)
    assert y.shape == x.shape and y.dtype == x.dtype
    levels = set(levels_reference(bits, quantizer, x.dtype).astype(x.dtype))
    assert set(numpy.unique(y)) <= levels


@given(cases())
def test_at_most_two_to_the_bits_values(case):
    x, bits, quantizer = case
    assert len(numpy.unique(qst.quantize(x, bits, quantizer))) <= 2 ** bits


@given(cases())
def test_inside_minus_one_one(case):
    x, bits, quantizer = case
    y = qst.quantize(x, bits, quantizer)
    assert ((-1 <= y) & (y <= 1)).all()


@given(cases())
def test_idempotent(case):
    x, bits, quantizer = case
    y = qst.quantize(x, bits, quantizer)
    numpy.testing.assert_array_equal(qst.quantize(y, bits, quantizer), y)


@given(cases())
def test_monotone_non_decreasing(case):
    x, bits, quantizer = case
    y = qst.quantize(numpy.sort(x.reshape(-1)), bits, quantizer)
    assert (numpy.diff(y.astype(numpy.float64)) >= 0).all()


@given(cases(max_bits=1))
def test_one_bit_is_sign(case):
    x, _, quantizer = case
    numpy.testing.assert_array_equal(
        qst.quantize(x, 1, quantizer), sign_reference(x))


@given(cases())
def test_32_bits_is_identity_inside_the_clip(case):
    x, _, quantizer = case
    for bits in (32, None):
        y = qst.quantize(x, bits, quantizer)
        numpy.testing.assert_array_equal(y, numpy.clip(x, -1, 1))
        inside = numpy.abs(x) <= 1
        numpy.testing.assert_array_equal(y[inside], x[inside])


@given(cases())
def test_stochastic_values_are_on_the_grid(case):
    x, bits, quantizer = case
    y = qst.quantize(x, bits, quantizer, stochastic=True)
    levels = set(levels_reference(bits, quantizer, x.dtype).astype(x.dtype))
    assert set(numpy.unique(y)) <= levels


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

import math

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

from qnn.functions import wage_quantizers as wq


# --- NumPy references, written from the formulas, element by element ------

def ref_quantize(x, k):
    if k == 1:
        return numpy.where(x >= 0, 1.0, -1.0).astype(x.dtype)
    if k == 32:
        return numpy.clip(x, -1, 1)
    s = 2.0 ** (1 - k)
    out = numpy.empty_like(x)
    for i, v in enumerate(x.flat):
        v = min(max(float(v), -1 + s), 1 - s)
        out.flat[i] = s * math.floor(v / s + 0.5)
    return out


def ref_shift(m):
    return 1.0 if m == 0 else 2.0 ** round(math.log2(m))


def ref_error(e, k):
    if k == 32:
        return e  # not quantized
    return ref_quantize((e / ref_shift(float(abs(e).max()))).astype(e.dtype),
                        k)


def grid_and_bounds(k, dtype, n=200, seed=0):
    """Random values, the clip bounds, values just outside and inside them,
    the grid's midpoints and 0."""
    s = 2.0 ** (1 - k)
    special = [0.0, -1 + s, 1 - s, -1, 1, -1.5, 1.5, s / 2, -s / 2,
               1.5 * s, 1 - s / 2, -1 + s / 2]
    rng = numpy.random.RandomState(seed)
    return numpy.concatenate(
        [special, rng.uniform(-1.6, 1.6, n)]).astype(dtype)


@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
@pytest.mark.parametrize('k', [1, 2, 3, 8, 12, 32])
def test_quantize_is_the_reference(k, dtype):
    x = grid_and_bounds(k, dtype)
    y = wq.quantize(x, k)
    assert y.dtype == dtype
    numpy.testing.assert_array_equal(y, ref_quantize(x, k))


@pytest.mark.parametrize('k', [2, 3, 8])
def test_quantize_levels_and_bounds(k):
    s = 2.0 ** (1 - k)
    y = wq.quantize(grid_and_bounds(k, numpy.float64), k)
    assert y.max() == 1 - s and y.min() == -1 + s
    numpy.testing.assert_array_equal(y / s, numpy.round(y / s))


def test_one_bit_is_sign_with_sign_of_zero_plus_one():
    y = wq.quantize(numpy.array([-0.0, 0.0, -1e-9, 3.0], 'f'), 1)
    numpy.testing.assert_array_equal(y, [1, 1, -1, 1])


@pytest.mark.parametrize('m,expected', [(0.0, 1.0), (1.0, 1.0), (0.7, 0.5),
                                        (0.75, 1.0), (3.0, 4.0),
                                        (1e-3, 2.0 ** -10)])
def test_shift(m, expected):
    assert wq.shift(numpy.array(m)) == expected == ref_shift(m)
    assert wq.scalar_shift(m) == expected


def test_layer_scale():
    # WAGE's LeNet-5 output layer: fan_in 512, 2-bit weights
    limit = math.sqrt(3.0 / 512)
    assert wq.layer_scale(2, limit) == ref_shift(0.75 / limit) == 8
    # a limit above 1.5 sigma: no scaling
    assert wq.layer_scale(8, 0.5) == 1


@pytest.mark.parametrize('k', [2, 8, 32])
def test_error_is_the_reference(k):
    rng = numpy.random.RandomState(k)
    for scale in (1e-6, 0.3, 1.0, 7.0):
        e = (rng.standard_normal((5, 7)) * scale).astype('f')
        numpy.testing.assert_array_equal(wq.quantize_error(e, k),
                                         ref_error(e, k))


def test_zero_error_stays_zero():
    e = numpy.zeros((3, 4), 'f')
    q = wq.quantize_error(e, 8)
    assert numpy.isfinite(q).all() and not q.any()


def test_nan_error_stays_nan():
    e = numpy.ones((2, 3), 'f')
    e[0, 1] = numpy.nan
    assert numpy.isnan(wq.quantize_error(e, 8)).all()


@pytest.mark.parametrize('k', [1, 2, 8])
def test_weight_forward_and_straight_backward(k):
    w = chainer.Variable(grid_and_bounds(k, numpy.float32))
    y = wq.wage_weight(w, k, 4.0)
    numpy.testing.assert_array_equal(y.array, ref_quantize(w.array, k) / 4)
    g = numpy.random.RandomState(1).standard_normal(w.shape).astype('f')
    y.grad = g
    y.backward()
    numpy.testing.assert_array_equal(w.grad, g)


@pytest.mark.parametrize('k', [1, 2, 8])
def test_activation_keeps_the_clips_gradient(k):
    x = chainer.Variable(grid_and_bounds(k, numpy.float32))
    y = wq.wage_activation(x, k)
    numpy.testing.assert_array_equal(y.array, ref_quantize(x.array, k))
    y.grad = numpy.ones_like(x.array)
    y.backward()
    s = 0.0 if k == 1 else 2.0 ** (1 - k)
    inside = (x.array >= -1 + s) & (x.array <= 1 - s)
    numpy.testing.assert_array_equal(x.grad, inside.astype('f'))
    # the bounds themselves pass the gradient
    assert x.grad[1] == 1 and x.grad[2] == 1


def test_error_node_is_identity_forward_quantized_backward():
    rng = numpy.random.RandomState(3)
    x = chainer.Variable(rng.standard_normal((4, 6)).astype('f'))
    y = wq.wage_error(x, 8)
    numpy.testing.assert_array_equal(y.array, x.array)
    g = rng.standard_normal((4, 6)).astype('f') * 0.01
    y.grad = g
    y.backward()
    numpy.testing.assert_array_equal(x.grad, ref_error(g, 8))


@pytest.mark.parametrize('bits', [0, 33])
def test_bad_bits_are_refused(bits):
    with pytest.raises(ValueError):
        wq.WageActivation(bits)
    with pytest.raises(ValueError):
        wq.WageError(bits)

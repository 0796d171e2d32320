
import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.functions as F
from chainer import gradient_check

from qnn.functions import shift_batch_normalization as fsbn

from helpers import ap2_reference, shift_bn_inputs, shift_bn_reference


SHAPES = [(10, 3), (4, 3, 2, 2)]
DTYPES = [numpy.float32, numpy.float64]


def tol(dtype):
    return {'rtol': 1e-5, 'atol': 1e-5} if dtype == numpy.float32 \
        else {'rtol': 1e-12, 'atol': 1e-12}


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('dtype', DTYPES)
def test_forward_training_and_running_statistics(shape, dtype):
    x, gamma, beta, _ = shift_bn_inputs(shape, dtype)
    running_mean = numpy.full(shape[1], 0.5, dtype)
    running_var = numpy.full(shape[1], 2.0, dtype)
    y = fsbn.shift_batch_normalization(x, gamma, beta, 1e-4, running_mean,
                                       running_var, decay=0.8)
    assert y.dtype == dtype and y.shape == shape
    expected, mean, var = shift_bn_reference(x, gamma, beta, 1e-4)
    numpy.testing.assert_allclose(y.array, expected, **tol(dtype))
    m = x.size // shape[1]
    numpy.testing.assert_allclose(running_mean, 0.8 * 0.5 + 0.2 * mean,
                                  **tol(dtype))
    numpy.testing.assert_allclose(
        running_var, 0.8 * 2.0 + 0.2 * var * m / (m - 1), **tol(dtype))


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('dtype', DTYPES)
def test_forward_fixed(shape, dtype):
    x, gamma, beta, _ = shift_bn_inputs(shape, dtype)
    mean = numpy.linspace(-1, 1, shape[1]).astype(dtype)
    var = numpy.linspace(0.3, 7, shape[1]).astype(dtype)
    y = fsbn.fixed_shift_batch_normalization(x, gamma, beta, mean, var, 1e-3)
    expected, _, _ = shift_bn_reference(x, gamma, beta, 1e-3, mean, var)
    numpy.testing.assert_allclose(y.array, expected, **tol(dtype))


def test_scale_is_a_power_of_two():
    x, gamma, beta, _ = shift_bn_inputs((10, 3), numpy.float32)
    y = fsbn.shift_batch_normalization(x, gamma, beta).array
    scale = (y - beta) / (x - x.mean(axis=0))
    expected = ap2_reference(scale.astype(numpy.float64))
    numpy.testing.assert_allclose(scale, expected, rtol=1e-4)
    # and it is not the unrounded scale of ordinary batch normalization
    plain = gamma / numpy.sqrt(x.var(axis=0) + 2e-5)
    assert not numpy.allclose(scale[0], plain, rtol=0.01)


def ste_reference(x, gamma, beta, eps):
    # straight-through AP2 written with Chainer's autograd: u + (AP2(u) - u)
    # with the bracket a constant
    axes = (0,) + tuple(range(2, x.ndim))
    mean = F.mean(x, axis=axes, keepdims=True)
    xc = x - F.broadcast_to(mean, x.shape)
    var = F.mean(xc * xc, axis=axes)
    r = (var + eps) ** -0.5
    r_q = r + (ap2_reference(r.array) - r.array).astype(x.dtype)
    g_q = gamma + (ap2_reference(gamma.array) - gamma.array).astype(x.dtype)
    scale = F.reshape(g_q * r_q, (1, -1) + (1,) * (x.ndim - 2))
    shift = F.reshape(beta, scale.shape)
    return F.broadcast_to(scale, x.shape) * xc + \
        F.broadcast_to(shift, x.shape)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('dtype', DTYPES)
def test_backward_is_straight_through(shape, dtype):
    arrays = shift_bn_inputs(shape, dtype)
    outputs = []
    for fn in (lambda x, g, b: fsbn.shift_batch_normalization(x, g, b, 1e-4),
               lambda x, g, b: ste_reference(x, g, b, 1e-4)):
        x, gamma, beta = (chainer.Variable(a.copy()) for a in arrays[:3])
        y = fn(x, gamma, beta)
        y.grad = arrays[3].copy()
        y.backward()
        outputs.append((y.array, x.grad, gamma.grad, beta.grad))
    loose = {'rtol': 1e-4, 'atol': 1e-4} if dtype == numpy.float32 \
        else {'rtol': 1e-10, 'atol': 1e-10}
    for ours, theirs in zip(*outputs):
        numpy.testing.assert_allclose(ours, theirs, **loose)


@pytest.fixture
def no_rounding(monkeypatch):
    monkeypatch.setattr(fsbn, 'ap2', lambda a: a.copy())


@pytest.mark.parametrize('shape', SHAPES)
def test_gradient_check_without_rounding(no_rounding, shape):
    # with AP2 the identity the transform is batch normalization, so the
    # formula of backward can be checked numerically (with the rounding the
    # numerical derivative of the piecewise-constant scale is 0)
    x, gamma, beta, gy = shift_bn_inputs(shape, numpy.float64)
    y = fsbn.shift_batch_normalization(x, gamma, beta, 1e-3)
    plain = F.batch_normalization(x, gamma, beta, eps=1e-3)
    numpy.testing.assert_allclose(y.array, plain.array, rtol=1e-10)
    gradient_check.check_backward(
        lambda x, g, b: fsbn.shift_batch_normalization(x, g, b, 1e-3),
        (x, gamma, beta), gy, eps=1e-4, atol=1e-6, rtol=1e-5)
    mean, var = x.mean(axis=0), x.var(axis=0) + 0.5
    if x.ndim == 2:
        gradient_check.check_backward(
            lambda x, g, b: fsbn.fixed_shift_batch_normalization(
                x, g, b, mean, var, 1e-3),
            (x, gamma, beta), gy, eps=1e-4, atol=1e-6, rtol=1e-5)


def test_fixed_backward_with_rounding():
    x, gamma, beta, gy = shift_bn_inputs((10, 3), numpy.float64)
    mean, var = x.mean(axis=0), x.var(axis=0)
    xv, gv, bv = (chainer.Variable(a) for a in (x, gamma, beta))
    y = fsbn.fixed_shift_batch_normalization(xv, gv, bv, mean, var, 1e-3)
    y.grad = gy
    y.backward()
    s = ap2_reference(1 / numpy.sqrt(var + 1e-3))
    numpy.testing.assert_allclose(xv.grad, gy * ap2_reference(gamma) * s,
                                  rtol=1e-12)
    numpy.testing.assert_allclose(gv.grad, s * (gy * (x - mean)).sum(0),
                                  rtol=1e-12)
    numpy.testing.assert_allclose(bv.grad, gy.sum(0), rtol=1e-12)


def test_type_errors():
    x, gamma, beta, _ = shift_bn_inputs((10, 3), numpy.float32)
    with pytest.raises(chainer.utils.type_check.InvalidType):
        fsbn.shift_batch_normalization(x, gamma[:2], beta[:2])
    with pytest.raises(chainer.utils.type_check.InvalidType):
        fsbn.shift_batch_normalization(x, gamma.astype('d'), beta)
    with pytest.raises(ValueError):
        fsbn.shift_batch_normalization(x, gamma, beta, eps=0)



import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import gradient_check

from qnn.functions.sum_squared_error import softmax_sum_squared_error
from qnn.functions.sum_squared_error import sum_squared_error


def reference(y, t):
    total = 0.0
    for n in range(len(y)):
        for c in range(y.shape[1]):
            total += 0.5 * (float(y[n, c]) - (1.0 if c == t[n] else 0.0)) ** 2
    return total / len(y)


@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
def test_forward_is_the_reference(dtype):
    rng = numpy.random.RandomState(0)
    y = rng.uniform(-2, 2, (7, 10)).astype(dtype)
    t = rng.randint(0, 10, 7).astype(numpy.int32)
    loss = sum_squared_error(y, t)
    assert loss.shape == () and loss.dtype == dtype
    numpy.testing.assert_allclose(loss.array, reference(y, t), rtol=1e-6)


def test_perfect_outputs_have_zero_loss_and_gradient():
    t = numpy.array([3, 0, 9], numpy.int32)
    y = chainer.Variable(numpy.eye(10, dtype='f')[t])
    loss = sum_squared_error(y, t)
    loss.backward()
    assert loss.array == 0 and not y.grad.any()


def test_gradient():
    rng = numpy.random.RandomState(1)
    y = rng.uniform(-1, 1, (4, 5))
    t = rng.randint(0, 5, 4).astype(numpy.int32)
    gradient_check.check_backward(lambda y: sum_squared_error(y, t), y,
                                  numpy.array(1.0), dtype=numpy.float64)


def test_softmax_variant_is_the_reference_of_the_softmax():
    rng = numpy.random.RandomState(2)
    y = rng.uniform(-3, 3, (5, 10))
    t = rng.randint(0, 10, 5).astype(numpy.int32)
    p = numpy.exp(y) / numpy.exp(y).sum(axis=1, keepdims=True)
    numpy.testing.assert_allclose(
        softmax_sum_squared_error(y, t).array, reference(p, t), rtol=1e-12)
    # bounded: at most 1 per example
    assert softmax_sum_squared_error(y * 100, t).array <= 1

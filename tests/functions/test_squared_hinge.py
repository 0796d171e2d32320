import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.functions as F
import chainer.links as L
from chainer import gradient_check
from chainer import testing

from qnn.functions.squared_hinge import squared_hinge


def reference(x, t):
    # Theano BinaryNet: T.mean(T.sqr(T.maximum(0., 1. - target * output)))
    target = 2 * numpy.eye(x.shape[1])[t] - 1
    return numpy.mean(numpy.square(numpy.maximum(0.0, 1.0 - target * x)))


def inputs(dtype, n=6, k=5, seed=0):
    rng = numpy.random.RandomState(seed)
    x = rng.uniform(-2, 2, (n, k)).astype(dtype)
    # keep away from the kink at the margin (T x = 1) for the numerical
    # gradient
    x[numpy.abs(numpy.abs(x) - 1) < 0.05] = 0.5
    t = rng.randint(0, k, n).astype(numpy.int32)
    return x, t


@testing.parameterize(*testing.product({
    'dtype': [numpy.float32, numpy.float64]}))
class TestSquaredHinge(object):

    def test_forward(self):
        x, t = inputs(self.dtype)
        y = squared_hinge(x, t)
        assert y.shape == () and y.dtype == self.dtype
        numpy.testing.assert_allclose(y.array, reference(x, t), rtol=1e-6)

    def test_is_chainer_hinge_over_classes(self):
        x, t = inputs(self.dtype)
        numpy.testing.assert_allclose(
            squared_hinge(x, t).array * x.shape[1],
            F.hinge(x, t, norm='L2').array, rtol=1e-6)

    def test_no_reduction(self):
        x, t = inputs(self.dtype)
        y = squared_hinge(x, t, reduce='no').array
        target = 2 * numpy.eye(x.shape[1])[t] - 1
        numpy.testing.assert_allclose(
            y, numpy.maximum(0, 1 - target * x) ** 2, rtol=1e-6)

    def test_backward(self):
        x, t = inputs(self.dtype)
        gy = numpy.asarray(0.7, self.dtype)
        tol = {'atol': 1e-3, 'rtol': 1e-3} if self.dtype == numpy.float32 \
            else {}
        gradient_check.check_backward(
            lambda x: squared_hinge(x, t), x, gy, dtype=numpy.float64,
            eps=1e-3, **tol)

    def test_gradient_formula(self):
        x, t = inputs(self.dtype)
        xv = chainer.Variable(x)
        squared_hinge(xv, t).backward()
        target = 2 * numpy.eye(x.shape[1])[t] - 1
        expected = -2 * target * numpy.maximum(0, 1 - target * x) / x.size
        numpy.testing.assert_allclose(xv.grad, expected, rtol=1e-5)


def test_bad_reduce():
    x, t = inputs(numpy.float32)
    with pytest.raises(ValueError):
        squared_hinge(x, t, reduce='sum')


def test_classifier_lossfun():
    x, t = inputs(numpy.float32)
    model = L.Classifier(L.Linear(5, 5), lossfun=squared_hinge)
    loss = model(x, t)
    assert loss.shape == ()
    loss.backward()
    assert model.predictor.W.grad is not None

"""XNOR-popcount products (qnn.backends.binary_matmul) against BLAS, bit for
bit, and their use by quantized_linear and quantized_convolution_2d."""
import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

from function_quantized_linear import quantized_linear
from qnn.backends import binary_matmul
from qnn.backends import cpu_kernels

pytestmark = pytest.mark.skipif(
    not cpu_kernels.available(), reason='numba kernels not available')


def signs(shape, seed, dtype=numpy.float32):
    rng = numpy.random.default_rng(seed)
    return numpy.where(rng.random(shape) < 0.5, -1, 1).astype(dtype)


# inner sizes around words and the kernel's eight-word passes
@pytest.mark.parametrize('n', [1, 63, 64, 65, 511, 512, 513, 1000])
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
@pytest.mark.parametrize('batch', [1, 7])
def test_equals_blas(n, dtype, batch):
    x = signs((batch, n), 1, dtype)
    w = signs((binary_matmul.MIN_UNITS + 3, n), 2, dtype)
    y = binary_matmul.xnor_matmul(x, w)
    assert y is not None and y.dtype == dtype
    numpy.testing.assert_array_equal(y, x.dot(w.T))
    # +0.0 where the sum is 0, as in the float product
    assert not numpy.signbit(y[y == 0]).any()


def test_strided_inputs():
    x = numpy.asfortranarray(signs((30, 200), 11))
    w = signs((40, 200), 12)
    for a, b in ((x, w), (x[:, ::2], w[:, ::2]), (x[::3], w.T.copy().T)):
        y = binary_matmul.xnor_matmul(a, b)
        assert y is not None
        numpy.testing.assert_array_equal(y, a.dot(b.T))


@pytest.mark.parametrize('value', [0.5, 2.0, numpy.nan, numpy.inf])
@pytest.mark.parametrize('where', ['x', 'w'])
def test_other_values_fall_back(value, where):
    x = signs((5, 130), 3)
    w = signs((70, 130), 4)
    # in the last row and word, so that all of it is checked
    (x if where == 'x' else w)[-1, -1] = value
    assert binary_matmul.xnor_matmul(x, w) is None


@pytest.mark.parametrize('value', [0.0, -0.0])
def test_zero_weights_fall_back(value):
    w = signs((70, 130), 4)
    w[-1, -1] = value
    assert binary_matmul.xnor_matmul(signs((5, 130), 3), w) is None


@pytest.mark.parametrize('n', [1, 63, 64, 65, 255, 256, 257, 1000])
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
def test_inputs_with_zeros_equal_blas(n, dtype):
    # a convolution's patches: +-1 and the padding's zeros (-0.0 too)
    x = signs((9, n), 13, dtype)
    rng = numpy.random.default_rng(14)
    x[rng.random(x.shape) < 0.3] = 0
    x[:, 0] = numpy.where(numpy.arange(9) % 2, 1, -1)  # a nonzero a row
    if n > 2:
        x[1, -1] = -0.0
        x[2, 1:] = 0  # a row of one nonzero
    w = signs((binary_matmul.MIN_UNITS + 5, n), 15, dtype)
    y = binary_matmul.xnor_matmul(x, w)
    assert y is not None
    numpy.testing.assert_array_equal(y, x.dot(w.T))
    assert not numpy.signbit(y[y == 0]).any()


def test_row_of_zeros_falls_back():
    x = signs((5, 130), 16)
    x[3] = 0
    assert binary_matmul.xnor_matmul(x, signs((70, 130), 17)) is None


def test_other_inputs_fall_back(monkeypatch):
    x = signs((5, 130), 5)
    w = signs((70, 130), 6)
    assert binary_matmul.xnor_matmul(x, w) is not None
    assert binary_matmul.xnor_matmul(x, w[:binary_matmul.MIN_UNITS - 1]) \
        is None
    assert binary_matmul.xnor_matmul(x.astype(numpy.float64), w) is None
    assert binary_matmul.xnor_matmul(x.astype(numpy.float16),
                                     w.astype(numpy.float16)) is None
    assert binary_matmul.xnor_matmul(x[:, :-1], w) is None
    monkeypatch.setenv('QNN_CPU_KERNELS', 'numpy')
    assert binary_matmul.xnor_matmul(x, w) is None


def recorded_products(monkeypatch):
    # what each call of xnor_matmul returns (None: BLAS's path taken)
    products = []
    xnor_matmul = binary_matmul.xnor_matmul

    def spy(*args):
        products.append(xnor_matmul(*args))
        return products[-1]
    monkeypatch.setattr(binary_matmul, 'xnor_matmul', spy)
    return products


@pytest.mark.parametrize('train', [True, False])
def test_quantized_linear_forward_and_backward(monkeypatch, train):
    # +-1 inputs take the XNOR path; the output and the gradients are
    # those of the BLAS path, bit for bit
    x = signs((10, 300), 9)
    rng = numpy.random.default_rng(10)
    W = rng.uniform(-1, 1, (80, 300)).astype(numpy.float32)
    gy = rng.standard_normal((10, 80)).astype(numpy.float32)
    products = recorded_products(monkeypatch)

    def run():
        xv, Wv = chainer.Variable(x.copy()), chainer.Variable(W.copy())
        with chainer.using_config('train', train):
            y = quantized_linear(xv, Wv)
        y.grad = gy.copy()
        y.backward()
        return y.array, xv.grad, Wv.grad

    fast = run()
    assert len(products) == 1 and products[0] is not None
    monkeypatch.setattr(binary_matmul, 'MIN_UNITS', 10 ** 9)
    slow = run()
    assert products[1] is None
    for a, b in zip(fast, slow):
        numpy.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('kwargs', [{'pad': 1}, {'pad': 1, 'stride': 2},
                                    {'pad': 0}])
def test_quantized_convolution_forward_and_backward(monkeypatch, kwargs):
    # +-1 maps (with the padding's zeros in the patches) take the XNOR
    # path; outputs and gradients are Chainer's convolution's, bit for bit
    from qnn.functions.quantized_convolution_2d import \
        quantized_convolution_2d
    import chainer.functions as F
    x = signs((3, 16, 9, 10), 18)
    rng = numpy.random.default_rng(19)
    W = rng.uniform(-1, 1, (20, 16, 3, 3)).astype(numpy.float32)
    products = recorded_products(monkeypatch)
    outputs = []
    gy = None
    for function, weight in ((quantized_convolution_2d, W),
                             (F.convolution_2d, numpy.where(W >= 0, 1, -1))):
        xv = chainer.Variable(x.copy())
        Wv = chainer.Variable(weight.astype(numpy.float32))
        y = function(xv, Wv, **kwargs)
        if gy is None:
            gy = rng.standard_normal(y.shape).astype(numpy.float32)
        y.grad = gy.copy()
        y.backward()
        outputs.append((y.array, xv.grad, Wv.grad))
    assert len(products) == 1 and products[0] is not None
    for a, b, name in zip(outputs[0], outputs[1], ('y', 'gx', 'gW')):
        numpy.testing.assert_array_equal(a, b, name)

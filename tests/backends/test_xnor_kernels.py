"""The XNOR-popcount kernels (qnn.backends.xnor_kernels) against the
packed networks' NumPy references."""
import numpy
import pytest

from qnn.backends import cpu_kernels
from qnn.backends import xnor_kernels
from qnn.packed import bits as packed_bits
from qnn.packed import dense_kernels

pytestmark = pytest.mark.skipif(
    not cpu_kernels.available(), reason='numba kernels not available')


def signs(shape, seed):
    rng = numpy.random.default_rng(seed)
    return numpy.where(rng.random(shape) < 0.5, -1, 1).astype(numpy.float32)


def test_pack_sign_rows_equals_pack_bits():
    pack = xnor_kernels.get()['pack_sign_rows']
    for n in (1, 64, 100, 130):
        x = signs((9, n), n)
        out, nonzero = (numpy.empty((9, xnor_kernels.n_words(n)),
                                    numpy.uint64) for _ in range(2))
        assert pack(x, out, nonzero) == 1
        numpy.testing.assert_array_equal(out, packed_bits.pack_signs(x))
        numpy.testing.assert_array_equal(
            nonzero, packed_bits.pack_bits(numpy.ones(x.shape, bool)))
        if n == 1:
            continue
        x[:, -1] = 0
        assert pack(x, out, nonzero) == 2
        numpy.testing.assert_array_equal(out, packed_bits.pack_bits(x > 0))
        numpy.testing.assert_array_equal(nonzero,
                                         packed_bits.pack_bits(x != 0))


@pytest.mark.parametrize('words', [1, 7, 8, 9, 17])
@pytest.mark.parametrize('kernel', ['xnor', 'xnor_one_core'])
def test_xnor_kernel_integer_sums_equal_reference(words, kernel):
    # the kernel of the packed networks too, with int64 sums
    n = 64 * words - 5
    X = packed_bits.pack_signs(signs((6, n), 7))
    W = packed_bits.pack_signs(signs((11, n), 8))
    sums = numpy.empty((6, 11), numpy.int64)
    xnor_kernels.get()[kernel](X, numpy.ascontiguousarray(W.T), n, sums)
    numpy.testing.assert_array_equal(
        sums, dense_kernels.reference_xnor(X, W, n))


@pytest.mark.parametrize('words', [1, 3, 4, 5, 9])
def test_xnor_masked_integer_sums_equal_integer_product(words):
    n = 64 * words - 3
    rng = numpy.random.default_rng(words)
    x = rng.integers(-1, 2, (7, n))
    w = numpy.where(rng.random((13, n)) < 0.5, -1, 1)
    X = packed_bits.pack_bits(x > 0)
    Z = packed_bits.pack_bits(x != 0)
    W = packed_bits.pack_bits(w > 0)
    sums = numpy.empty((7, 13), numpy.int64)
    xnor_kernels.get()['xnor_masked'](X, Z, numpy.ascontiguousarray(W.T),
                                      sums)
    numpy.testing.assert_array_equal(sums, x @ w.T)

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)

from qnn.functions.ap2 import ap2


@pytest.mark.parametrize('dtype', [numpy.float16, numpy.float32,
                                   numpy.float64])
def test_against_log2_formula(dtype):
    rng = numpy.random.RandomState(0)
    x = (rng.standard_normal(1000) * 10.0 ** rng.uniform(-3, 3, 1000)) \
        .astype(dtype)
    y = ap2(x)
    assert y.dtype == dtype and y.shape == x.shape
    a = numpy.abs(x.astype(numpy.float64))
    expected = numpy.sign(x) * 2.0 ** numpy.round(numpy.log2(a))
    numpy.testing.assert_array_equal(y, expected.astype(dtype))


def test_exact_powers_of_two_and_zero():
    x = numpy.array([0.0, -0.0, 1.0, -1.0, 0.75, 1.4, 1.42, 3.0, -5.0, 6.0,
                     2.0 ** -130], numpy.float32)
    y = ap2(x)
    numpy.testing.assert_array_equal(
        y, numpy.array([0, 0, 1, -1, 1, 1, 2, 4, -4, 8, 2.0 ** -130],
                       numpy.float32))
    mantissa, _ = numpy.frexp(y[y != 0])
    assert numpy.all(numpy.abs(mantissa) == 0.5)


def test_scalar_array():
    y = ap2(numpy.asarray(3.0))
    assert isinstance(y, numpy.ndarray) and y == 4.0

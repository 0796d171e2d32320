"""The numba kernels of cpu_kernels against their NumPy references, bit for
bit, and their use by InplaceAdam + WeightClip and qst."""
import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)

from qnn.backends import cpu_kernels

pytestmark = pytest.mark.skipif(
    not cpu_kernels.available(), reason='numba kernels not available')


def test_usable():
    a = numpy.zeros(10, numpy.float32)
    assert cpu_kernels.usable(a, a)
    assert not cpu_kernels.usable(a, a.astype(numpy.float64))
    assert not cpu_kernels.usable(a.astype(numpy.float16))
    assert not cpu_kernels.usable(numpy.zeros((4, 4), numpy.float32).T[:2])

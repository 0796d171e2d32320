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


def test_by_batch_runs_few_rows_on_one_core():
    numba = cpu_kernels.import_numba()

    @numba.njit(parallel=True)
    def doubled(x, out):
        for i in numba.prange(len(x)):
            out[i] = 2 * x[i]

    call = cpu_kernels.by_batch(numba, doubled)
    x = numpy.arange(5.)
    for rows in (0, 1, 5):
        out = numpy.zeros(rows)
        call(x[:rows], out)
        numpy.testing.assert_array_equal(out, 2 * x[:rows])
    assert not call.one_core.targetoptions.get('parallel')
    assert call.parallel is doubled
    out = numpy.zeros(1)
    call.one_core(x[:1], out)
    assert out[0] == 2 * x[0]

import threading

import numpy
import pytest

from qnn.backends import cpu_threads
import qst
from weight_clip import WeightClip


def test_pieces_run_on_several_threads_and_cover_everything():
    size = 3 * cpu_threads.MIN_CHUNK + 5
    x = numpy.arange(size, dtype=numpy.float64)
    y = numpy.zeros(size)
    seen = []

    def double(x, y):
        seen.append((threading.get_ident(), x.size))
        numpy.multiply(x, 2, out=y)

    cpu_threads.run(double, (x, y), threads=3)
    numpy.testing.assert_array_equal(y, 2 * x)
    sizes = [n for _, n in seen]
    assert len(sizes) == 3 and sum(sizes) == size
    assert max(sizes) - min(sizes) <= 1
    # the calling thread and at least one other
    assert threading.get_ident() in {ident for ident, _ in seen}
    assert len({ident for ident, _ in seen}) >= 2


@pytest.mark.parametrize('array', [
    numpy.ones(100),  # too small to cut
    numpy.ones((4, 3 * cpu_threads.MIN_CHUNK))[:, ::2],  # not contiguous
])
def test_runs_once_on_the_whole_arrays(array):
    calls = []
    cpu_threads.run(lambda a: calls.append(a), (array,), threads=4)
    assert len(calls) == 1 and calls[0] is array


def test_sign_and_clip_of_a_large_array_are_exact(monkeypatch):
    # the threaded NumPy path (the numba one is tested in test_cpu_kernels)
    monkeypatch.setenv('QNN_CPU_KERNELS', 'numpy')
    size = 3 * cpu_threads.MIN_CHUNK + 7
    x = numpy.random.uniform(-2, 2, size).astype(numpy.float32)
    x[::1000] = 0
    expected = numpy.where(x >= 0, 1, -1).astype(numpy.float32)
    numpy.testing.assert_array_equal(qst.quantize(x), expected)

    class Link(object):
        def __init__(self, W):
            self.W = type('P', (), {'array': W, 'update_rule': None})()

        def quantized_params(self):
            yield self.W

    link = Link(x.copy())
    optimizer = type('O', (), {'t': 1})()
    optimizer.target = type('T', (), {'links': lambda self: [link]})()
    WeightClip()(optimizer)
    numpy.testing.assert_array_equal(link.W.array, numpy.clip(x, -1, 1))


def test_set_threads():
    before = cpu_threads.get_threads()
    try:
        cpu_threads.set_threads(0)
        assert cpu_threads.get_threads() == 1
        cpu_threads.set_threads(3)
        assert cpu_threads.get_threads() == 3
    finally:
        cpu_threads.set_threads(before)

"""Whole packed networks (qnn.packed.forward): the numba and CUDA kernels equal
the NumPy reference."""
import numpy
import pytest

from qnn.packed import forward as packed_forward

from helpers import random_network


@pytest.mark.parametrize('sizes', [(784, 1000, 1000, 10), (33, 65, 10),
                                   (784, 33, 100, 33, 10)])
def test_numba_equals_numpy_reference(sizes):
    rng = numpy.random.default_rng(len(sizes))
    network = random_network(rng, sizes)
    pixels = rng.integers(0, 256, size=(37, sizes[0])).astype(numpy.uint8)
    expected = packed_forward.layer_sums(network.layers, pixels, 'numpy')
    numpy.testing.assert_array_equal(
        packed_forward.layer_sums(network.layers, pixels, 'numba'), expected)
    assert len(numpy.unique(expected)) > 5


@pytest.mark.gpu
def test_cupy_equals_numpy_reference():
    import cupy
    rng = numpy.random.default_rng(3)
    for sizes in ((784, 1000, 1000, 10), (33, 65, 10)):
        network = random_network(rng, sizes)
        pixels = rng.integers(0, 256, size=(37, sizes[0])).astype(
            numpy.uint8)
        numpy.testing.assert_array_equal(
            cupy.asnumpy(packed_forward.layer_sums(network.layers, pixels,
                                                   'cupy')),
            packed_forward.layer_sums(network.layers, pixels, 'numpy'))

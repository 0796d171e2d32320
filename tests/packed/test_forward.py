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


@pytest.mark.parametrize('sizes', [(784, 1000, 1000, 10), (33, 65, 130, 3),
                                   (784, 33, 100, 33, 10)])
@pytest.mark.parametrize('batch', [1, 2, 5])
def test_mlp_kernels_equal_numpy_reference(sizes, batch):
    # the kernels of a binarized MLP, whatever numba's threads: an image
    # per core, its twin on one core (what a batch smaller than the
    # threads runs); odd widths leave part of a word
    rng = numpy.random.default_rng(batch + len(sizes))
    network = random_network(rng, sizes)
    pixels = rng.integers(0, 256, size=(batch, sizes[0])).astype(
        numpy.uint8)
    expected = packed_forward.layer_sums(network.layers, pixels, 'numpy')
    logits = packed_forward.affine_logits(expected, network.layers[-1])
    images, args = packed_forward.mlp_plan(network.layers)
    for kernel in (images.parallel, images.one_core):
        sums = numpy.full(expected.shape, -1, numpy.int64)
        out = numpy.full(expected.shape, numpy.nan, numpy.float32)
        kernel(pixels, *args, sums, out)
        numpy.testing.assert_array_equal(sums, expected)
        numpy.testing.assert_array_equal(out, logits)


@pytest.mark.parametrize('batch', [1, 3])
def test_forward_of_an_mlp_equals_numpy_reference(batch):
    rng = numpy.random.default_rng(7)
    network = random_network(rng, (784, 100, 65, 10))
    pixels = rng.integers(0, 256, size=(batch, 784)).astype(numpy.uint8)
    numpy.testing.assert_array_equal(
        packed_forward.forward(network, pixels, 'numba'),
        packed_forward.forward(network, pixels, 'numpy'))


def test_mlp_plan_only_for_binarized_mlps():
    rng = numpy.random.default_rng(8)
    assert packed_forward.mlp_plan(random_network(rng, (33, 65, 20, 10))
                                   .layers) is not None
    # no hidden XNOR layer: layer by layer
    assert packed_forward.mlp_plan(random_network(rng, (33, 65, 10))
                                   .layers) is None

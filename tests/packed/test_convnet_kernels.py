import numba
import numpy
import pytest

from qnn.packed import forward as packed_forward

from helpers import conv_network
from helpers import word_convnet

GEOMETRIES = {
    # the small ConvNet's kinds of layers: 1, 16 and 64 channels in, the
    # maps of the last one whole words of 64 channels
    'small': {},
    # several words of channels in (128), an unpooled one
    'wide': {'channels': (16, 128, 64), 'pools': (True, False, True),
             'units': (256,)},
    # 5x5 taps, no padding (odd sizes pooled with cover_all)
    'valid 5x5': {'channels': (8, 64), 'pools': (True, True), 'ksize': 5,
                  'pad': 0, 'units': (100, 64)},
}


def whole_network_plan(network):
    return packed_forward.convnet_plan(network.layers)


@pytest.mark.parametrize('geometry', sorted(GEOMETRIES))
@pytest.mark.parametrize('batch', [1, 2, 3, 5])
def test_one_call_equals_numpy_reference(geometry, batch):
    rng = numpy.random.default_rng(batch)
    network = word_convnet(rng, **GEOMETRIES[geometry])
    assert whole_network_plan(network) is not None
    pixels = rng.integers(0, 256, (batch, 784)).astype(numpy.uint8)
    pixels[:, :100] = 0  # borders of zeros as MNIST has
    expected = packed_forward.layer_sums(network.layers, pixels, 'numpy')
    numpy.testing.assert_array_equal(
        packed_forward.layer_sums(network.layers, pixels, 'numba'),
        expected)
    numpy.testing.assert_array_equal(
        packed_forward.forward(network, pixels, 'numba'),
        packed_forward.affine_logits(expected, network.layers[-1]))


def test_one_call_on_one_thread_and_on_all_alike():
    rng = numpy.random.default_rng(7)
    network = word_convnet(rng)
    pixels = rng.integers(0, 256, (9, 784)).astype(numpy.uint8)
    on_all = packed_forward.layer_sums(network.layers, pixels, 'numba')
    with_threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        on_one = packed_forward.layer_sums(network.layers, pixels, 'numba')
    finally:
        numba.set_num_threads(with_threads)
    numpy.testing.assert_array_equal(on_one, on_all)
    numpy.testing.assert_array_equal(on_all, packed_forward.layer_sums(
        network.layers, pixels, 'numpy'))


def test_no_one_call_where_the_maps_are_no_whole_words():
    # 4 channels: the dense layer's input repacks them (layer by layer)
    network = conv_network(numpy.random.default_rng(0))
    assert whole_network_plan(network) is None

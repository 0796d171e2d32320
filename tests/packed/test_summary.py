"""The summary of a packed network (qnn.packed.summary): one row per layer
with its parameters, bytes and multiply-accumulates, the totals, the file
size."""
import numpy

from qnn.packed import format as packed_format
from qnn.packed import summary as packed_summary

from helpers import folded_layer
from helpers import random_network


def test_rows_count_the_weights_and_the_products():
    network = random_network(numpy.random.default_rng(1), (784, 100, 10))
    first, last = packed_summary.rows(network)
    assert first['kind'] == 'bit-plane dense, sign'
    assert last['kind'] == 'XNOR dense, affine'
    assert (first['weight_bits'], first['input_bits']) == (1, 8)
    assert first['int8_macs'] == 784 * 100 and first['binary_macs'] == 0
    assert (last['weight_bits'], last['input_bits']) == (1, 1)
    assert last['binary_macs'] == 100 * 10 and last['int8_macs'] == 0
    # weights, then 1 threshold per unit; the output's 4 affine arrays
    assert first['params'] == 784 * 100 + 100
    assert last['params'] == 100 * 10 + 4 * 10
    assert first['packed_bytes'] == 100 * 13 * 8 + 100 * 4
    assert first['float32_bytes'] == (784 * 100 + 4 * 100) * 4


def test_text_has_the_totals_and_the_file_size(tmp_path):
    path = str(tmp_path / 'net.bnn')
    packed_format.save(path, random_network(numpy.random.default_rng(2),
                                            (784, 33, 10)))
    text = packed_summary.file_summary(path)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ['layer', 'kind', 'shape']
    total = next(line for line in lines if line.startswith('total'))
    rows = packed_summary.rows(packed_format.load(path))
    assert int(total.split()[1]) == sum(row['params'] for row in rows)
    size = int(lines[-1].split()[2])
    assert size == tmp_path.joinpath('net.bnn').stat().st_size
    assert 'smaller than float32' in lines[-1]


def test_bit_macs_count_every_bit_plane():
    # the first layer's 8 pixel planes, each a 1-bit product per weight;
    # the hidden and output layers one product per weight
    network = random_network(numpy.random.default_rng(3),
                             (784, 1000, 1000, 10))
    first, hidden, last = packed_summary.rows(network)
    assert first['bit_macs'] == 8 * 784 * 1000
    assert hidden['bit_macs'] == 1000 * 1000
    assert last['bit_macs'] == 1000 * 10
    assert packed_summary.bit_macs(network) == (
        8 * 784 * 1000 + 1000 * 1000 + 1000 * 10)


def test_bit_macs_of_convolutions():
    # a 3x3 convolution's products over its valid taps: 8 planes each on
    # pixels, one on signs
    rng = numpy.random.default_rng(4)
    pixels, _, _ = folded_layer(rng, (1, 5, 4, 16, True), first=True)
    signs, _, _ = folded_layer(rng, (16, 3, 2, 32, False), first=False)
    network = packed_format.PackedNetwork([pixels, signs], {
        'size': 20, 'pixel_bits': 8, 'scale': 255, 'shift': 0})
    first, second = packed_summary.rows(network)
    assert first['bit_macs'] == 8 * (3 * 5 - 2) * (3 * 4 - 2) * 1 * 16
    assert second['bit_macs'] == (3 * 3 - 2) * (3 * 2 - 2) * 16 * 32

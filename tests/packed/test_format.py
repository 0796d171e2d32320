"""The packed file (qnn.packed.format): written and read back, readable with
NumPy alone."""
import os
import re

import numpy

from qnn.packed import format as packed_format
from qnn.packed import summary as packed_summary

from helpers import random_network


def test_file_round_trip_and_summary_size(packed_file):
    network = packed_format.load(packed_file)
    again = random_network(numpy.random.default_rng(5), (784, 33, 10))
    for layer, expected in zip(network.layers, again.layers):
        assert set(layer.arrays) == set(expected.arrays)
        for name in layer.arrays:
            numpy.testing.assert_array_equal(layer.arrays[name],
                                             expected.arrays[name])
    text = packed_summary.summary(network)
    size = int(re.search(r'^file size: (\d+) bytes', text, re.M).group(1))
    assert size == os.path.getsize(packed_file)
    assert os.path.getsize(packed_file) % 64 == 32  # aligned + checksum


def test_file_loads_with_numpy_alone(packed_file):
    # what the format promises: header, then raw arrays at their offsets
    import json
    import struct
    with open(packed_file, 'rb') as f:
        data = f.read()
    magic, version, length = struct.unpack_from('<8sII', data)
    header = json.loads(data[16:16 + length])
    spec = header['layers'][0]['arrays']['weights']
    W = numpy.frombuffer(data, spec['dtype'], numpy.prod(spec['shape']),
                         spec['offset']).reshape(spec['shape'])
    numpy.testing.assert_array_equal(
        W, packed_format.load(packed_file).layers[0].weights)
    assert (magic, version) == (packed_format.MAGIC, packed_format.VERSION)

"""The packed file (qnn.packed.format): written and read back, readable with
NumPy alone."""
import json
import os
import re

import numpy
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from qnn.packed import format as packed_format
from qnn.packed import forward as packed_forward
from qnn.packed import summary as packed_summary

from helpers import conv_network
from helpers import dense_network
from helpers import forge
from helpers import levels_network
from helpers import random_network
from helpers import split_packed


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


# --- mutated files (hypothesis) -------------------------------------------
# Property tests of the packed-file reader: whatever a file says, with a
# valid checksum, the reader refuses it in one line or returns a network
# that the kernels can run, the numba kernels agreeing with the NumPy
# reference (hypothesis mutates the header and the arrays of valid files).

BASES = {'dense': dense_network, 'conv': conv_network,
         'levels': levels_network}
# a fixed number of files per base; CI replays the same ones every run
EXAMPLES = 150
PROFILE = settings(max_examples=EXAMPLES, deadline=None,
                   derandomize=bool(os.environ.get('CI')),
                   suppress_health_check=[HealthCheck.too_slow,
                                          HealthCheck.data_too_large])


@pytest.fixture(scope='module')
def good_files():
    rng = numpy.random.default_rng(1)
    return {name: packed_format.encode(make(rng))
            for name, make in BASES.items()}


def leaves(value, path=()):
    """The paths (keys and indices) of every value inside ``value``."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += leaves(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += leaves(item, path + (index,))
    return found


def hostile_values(original):
    """Values a forger would try in place of ``original``."""
    near = [] if type(original) is not int else [
        st.integers(original - 70, original + 70)]
    return st.one_of(near + [
        st.sampled_from([0, 1, -1, 8, 63, 64, 65, 784, 2 ** 31, 2 ** 32,
                         2 ** 53, 2 ** 63, 2 ** 64, 10 ** 30, '@1e999@']),
        st.integers(), st.floats(), st.booleans(), st.none(),
        st.text(max_size=8),
        st.sampled_from(['mnist', 'cifar10', 'planes', 'xnor', 'levels',
                         'conv_pixels', 'conv_xnor', 'levels_pixels',
                         'conv_levels', 'sign', 'affine', '<u8', '<i4',
                         '<f4', '|u1']),
        st.lists(st.integers(-3, 800), max_size=4),
        st.dictionaries(st.sampled_from(['in_shape', 'channels', 'pool',
                                         'weight_bits', 'x']),
                        st.integers(-1, 9), max_size=3),
    ])


@st.composite
def header_edits(draw, header):
    """``mutate`` functions for :func:`forge`: one to three values of the
    header replaced, removed or duplicated."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(leaves(header)))
        action = draw(st.sampled_from(['replace', 'replace', 'remove',
                                       'duplicate']))
        target = header
        for key in path[:-1]:
            target = target[key]
        original = target[path[-1]]
        value = draw(hostile_values(original))
        edits.append((path, action, value))

    def mutate(forged):
        for path, action, value in edits:
            target = forged
            try:
                for key in path[:-1]:
                    target = target[key]
                if action == 'replace':
                    target[path[-1]] = value
                elif action == 'remove':
                    del target[path[-1]]
                elif isinstance(target, list):
                    target.insert(path[-1], target[path[-1]])
            except (KeyError, IndexError, TypeError):
                pass  # an earlier edit took the place away
    return mutate


@st.composite
def array_edits(draw, good):
    """``patch`` functions for :func:`forge`: random bytes written into the
    arrays (after the 4096 bytes forge moves them by)."""
    header, blobs = split_packed(good)
    writes = []
    for _ in range(draw(st.integers(1, 6))):
        index, name = draw(st.sampled_from(sorted(blobs)))
        spec = header['layers'][index]['arrays'][name]
        at = spec['offset'] + 4096 + draw(
            st.integers(0, len(blobs[index, name]) - 1))
        writes.append((at, draw(st.integers(0, 255))))

    def patch(body):
        for at, byte in writes:
            body[at] = byte
    return patch


def check(data):
    """Either a one-line refusal or a network the kernels agree on."""
    try:
        network = packed_format.decode(data)
    except packed_format.PackedFileError as e:
        message = str(e)
        assert message and '\n' not in message and len(message) < 400
        return 'refused'
    first = network.layers[0]
    assert first.n_in == network.input['size'] == numpy.prod(
        network.input['shape'])
    pixels = numpy.random.default_rng(0).integers(
        0, 256, (3, first.n_in)).astype(numpy.uint8)
    expected = packed_forward.forward(network, pixels, 'numpy')
    numpy.testing.assert_array_equal(
        packed_forward.forward(network, pixels, 'numba'), expected)
    assert expected.shape == (3, network.layers[-1].n_out)
    return 'read'


@pytest.mark.parametrize('base', sorted(BASES))
def test_mutated_header_is_refused_or_runs_alike(good_files, base):
    good = good_files[base]
    header, _ = split_packed(good)
    outcomes = []

    @PROFILE
    @given(st.data())
    def property_(data):
        outcomes.append(check(forge(good, data.draw(header_edits(header)))))
    property_()
    # the budget means something: most forgeries are refused, and a file
    # whose edits were harmless (a source field, say) is read and run
    assert outcomes.count('refused') > len(outcomes) // 2


@pytest.mark.parametrize('base', sorted(BASES))
def test_mutated_arrays_are_refused_or_run_alike(good_files, base):
    good = good_files[base]
    outcomes = []

    @PROFILE
    @given(st.data())
    def property_(data):
        outcomes.append(check(forge(good, patch=data.draw(
            array_edits(good)))))
    property_()
    # random weights and thresholds are a valid network; padding bits,
    # non-finite floats and flipped values above 1 are not
    assert 'read' in outcomes and 'refused' in outcomes


def test_the_forged_bases_are_valid(good_files):
    for good in good_files.values():
        assert check(forge(good)) == 'read'
        assert json.loads(json.dumps(split_packed(good)[0]))

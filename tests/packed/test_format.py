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
from helpers import geometry_network
from helpers import levels_network
from helpers import random_bits
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
         'levels': levels_network, 'geometry': geometry_network}
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


# --- the optional fields: kernel size, padding, pixel threshold ------------

def test_default_geometry_and_input_are_written_as_before():
    # a file of 3x3 convolutions with padding 1 on the raw pixels names
    # none of the optional fields: the files of before, byte for byte
    data = packed_format.encode(conv_network(numpy.random.default_rng(3)))
    header, _ = split_packed(data)
    assert 'pixel_thresholds' not in header['input']
    for layer in header['layers'][:2]:
        assert set(layer['conv']) == {'in_shape', 'channels', 'pool'}
    explicit = forge(data, lambda h: [layer['conv'].update(ksize=3, pad=1)
                                      for layer in h['layers'][:2]])
    pixels = numpy.random.default_rng(0).integers(0, 256, (4, 784)).astype(
        numpy.uint8)
    numpy.testing.assert_array_equal(
        packed_forward.forward(packed_format.decode(explicit), pixels),
        packed_forward.forward(packed_format.decode(forge(data)), pixels))


def test_pixel_thresholds_give_the_levels_of_the_pixels():
    network = geometry_network(numpy.random.default_rng(4))
    pixels = numpy.random.default_rng(1).integers(0, 256, (5, 784)).astype(
        numpy.uint8)
    levels = (pixels >= 96).astype(numpy.uint8) + (pixels >= 160)
    assert set(numpy.unique(levels)) == {0, 1, 2}
    plain = geometry_network(numpy.random.default_rng(4))
    del plain.input['pixel_thresholds']
    for backend in ('numpy', 'numba'):
        numpy.testing.assert_array_equal(
            packed_forward.forward(network, pixels, backend),
            packed_forward.forward(plain, levels, backend))


def _set(path, value):
    def mutate(header):
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


@pytest.mark.parametrize('path, value, words', [
    (('layers', 0, 'conv', 'ksize'), 0, 'ksize is 0'),
    (('layers', 0, 'conv', 'ksize'), 16, 'ksize is 16'),
    (('layers', 0, 'conv', 'ksize'), 5.0, 'ksize is 5.0'),
    (('layers', 0, 'conv', 'ksize'), True, 'ksize is True'),
    (('layers', 0, 'conv', 'ksize'), '5', "ksize is '5'"),
    (('layers', 0, 'conv', 'ksize'), None, 'ksize is None'),
    (('layers', 0, 'conv', 'pad'), -1, 'pad is -1'),
    (('layers', 0, 'conv', 'pad'), 5, 'pad is 5'),
    (('layers', 1, 'conv', 'pad'), '@1e999@', 'pad is inf'),
    (('layers', 0, 'conv', 'stride'), 1, "unknown key 'stride'"),
    # the shapes follow from the geometry: other ones are refused
    (('layers', 0, 'conv', 'ksize'), 3, 'inputs and'),
    (('layers', 0, 'conv', 'pad'), 1, 'inputs and'),
    (('input', 'pixel_thresholds'), [0], 'pixel_thresholds[0] is 0'),
    (('input', 'pixel_thresholds'), [256], 'pixel_thresholds[0] is 256'),
    (('input', 'pixel_thresholds'), [96, 96], 'pixel_thresholds[1] is 96'),
    (('input', 'pixel_thresholds'), [160, 96], 'pixel_thresholds[1] is 96'),
    (('input', 'pixel_thresholds'), [64.0], 'pixel_thresholds[0] is 64.0'),
    (('input', 'pixel_thresholds'), [True], 'pixel_thresholds[0] is True'),
    (('input', 'pixel_thresholds'), [], 'not a list of 1 to 15'),
    (('input', 'pixel_thresholds'), list(range(1, 17)),
     'not a list of 1 to 15'),
    (('input', 'pixel_thresholds'), 64, 'not a list of 1 to 15'),
    (('input', 'pixel_thresholds'), None, 'not a list of 1 to 15'),
])
def test_bad_geometry_and_threshold_are_refused(path, value, words):
    good = packed_format.encode(geometry_network(
        numpy.random.default_rng(2)))
    with pytest.raises(packed_format.PackedFileError) as e:
        packed_format.decode(forge(good, _set(path, value)))
    assert words in str(e.value) and '\n' not in str(e.value)


def test_a_convolution_larger_than_its_image_is_refused():
    # 15x15 valid on the second layer's 12x12: no output position
    good = packed_format.encode(geometry_network(
        numpy.random.default_rng(2)))

    def mutate(header):
        header['layers'][1]['conv'].update(ksize=15, pad=0)
    with pytest.raises(packed_format.PackedFileError) as e:
        packed_format.decode(forge(good, mutate))
    assert 'a 15x15 convolution with padding 0 of an image of 12x12' in \
        str(e.value)


def test_k_bit_convolutions_keep_the_default_geometry():
    rng = numpy.random.default_rng(0)
    Layer = packed_format.Layer
    conv = Layer('conv1', 'conv_levels_pixels', 784, 4 * 12 * 12, 'levels',
                 random_bits(rng, (4, 2, 1), 25),
                 conv={'in_shape': [1, 28, 28], 'channels': 4, 'pool': True,
                       'ksize': 5, 'pad': 0},
                 levels={'weight_bits': 2, 'input_bits': 8,
                         'output_bits': 2},
                 thresholds=numpy.zeros((4, 3), numpy.int32),
                 flipped=numpy.zeros(4, numpy.uint8))
    dense = Layer('fc1', 'levels', 576, 10, 'affine',
                  random_bits(rng, (10, 2, 9), 576),
                  levels={'weight_bits': 2, 'input_bits': 2,
                          'output_bits': None},
                  **{k: numpy.ones(10, numpy.float32)
                     for k in ('mean', 'inv_std', 'gamma', 'beta')})
    network = packed_format.PackedNetwork(
        [conv, dense], dict(conv_network(rng).input))
    with pytest.raises(packed_format.PackedFileError) as e:
        packed_format.encode(network)
    assert 'k-bit convolution of 5x5 with padding 0' in str(e.value)
    conv.conv.update(ksize=3, pad=1)
    conv.n_out = 4 * 14 * 14
    conv.arrays['weights'] = conv.weights = random_bits(rng, (4, 2, 1), 9)
    dense.n_in = 784
    dense.arrays['weights'] = dense.weights = random_bits(rng, (10, 2, 13),
                                                          784)
    packed_format.encode(network)  # 3x3 with padding 1: written

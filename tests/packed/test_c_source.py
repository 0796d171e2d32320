"""The C source of qnn/packed/c_source.py on random packed networks of
every layer kind, compiled with the host's gcc and clang, against the
packed network's NumPy reference: logits equal bit for bit on MNIST test
images and random images of odd shapes (words not full, more than a word
of channels, odd sizes pooled, flipped channels, thresholds no sum or
every sum reaches, 1 to 4 bits); the scratch buffer the header declares
is enough (AddressSanitizer); the object writes no global and calls no
library but memset and memcpy; clean compiles at -O2 and -Os; hostile
layer names; what it refuses. The trained networks on the four targets:
tests/test_c_targets.py."""
import os
import re
import subprocess

import numpy
import pytest

from qnn.datasets import mnist
from qnn.packed import c_source
from qnn.packed import format as packed_format
from qnn.packed import forward as packed_forward
from qnn.packed.format import Layer
from qnn.packed.format import n_words

import helpers

MNIST = (1, 28, 28)
ODD = (3, 9, 7)
MNIST_SHAPE = (1, 28, 28)


def random_words(rng, shape, n):
    return c_source.pack_bits(rng.random(shape + (n,)) < 0.5)


def random_thresholds(rng, units, count, spread, sign=False):
    """Ascending thresholds around the sums' spread; of 8 units or more,
    the first unit's are reached by no sum, the second's by every sum."""
    T = numpy.sort(rng.normal(0, spread, (units, count)).round(),
                   axis=1)
    if units >= 8:
        T[0], T[1] = 2 ** 31 - 1, -2 ** 31
    T = T.astype(numpy.int32)
    return T[:, 0] if sign else T


def random_affine(rng, units, spread):
    affine = dict(mean=rng.normal(0, spread / 4, units),
                  inv_std=rng.uniform(0.5, 2, units) / spread,
                  gamma=rng.normal(0, 1, units), beta=rng.normal(0, 1, units))
    affine = {k: v.astype(numpy.float32) for k, v in affine.items()}
    affine['gamma'][0] = 1e-40  # a subnormal float32
    affine['beta'][1] = -0.0
    return affine


def levels_meta(weight_bits, input_bits, output_bits):
    return {'weight_bits': weight_bits, 'input_bits': input_bits,
            'output_bits': output_bits}


class Builder(object):

    """Random layers chained from an input of ``shape``, each with
    thresholds at the spread of its sums, so that their outputs vary."""

    def __init__(self, rng, shape, weight_bits=None, activation_bits=None):
        self.rng = rng
        self.shape = shape
        self.size = int(numpy.prod(shape))
        self.kw, self.ka = weight_bits, activation_bits
        self.layers = []
        # the spread of one value times a weight: pixels, then activations
        L_w = 2 ** (weight_bits or 1) - 1
        self.value_spread = 100. * 0.6 * L_w

    def _next_spread(self):
        # (2u - L_a)(2v - L_w), or +-1 products
        L_a = 2 ** (self.ka or 1) - 1
        L_w = 2 ** (self.kw or 1) - 1
        self.value_spread = 0.6 * L_a * 0.6 * L_w if self.kw else 1.

    def _in_bits(self):
        return 8 if not self.layers else self.ka

    def conv(self, channels, pool):
        C, H, W = self.shape
        K, first = channels, not self.layers
        H2, W2 = packed_format.pooled(H, pool), packed_format.pooled(W, pool)
        conv = {'in_shape': [C, H, W], 'channels': K, 'pool': pool}
        spread = self.value_spread * numpy.sqrt(9 * C)
        flipped = (self.rng.random(K) < 0.5).astype(numpy.uint8)
        if self.kw is None:
            kind = 'conv_pixels' if first else 'conv_xnor'
            weights = random_words(self.rng, (K, 9), C)
            arrays = dict(thresholds=random_thresholds(self.rng, K, 1,
                                                       spread, sign=True))
            meta = None
        else:
            kind = 'conv_levels_pixels' if first else 'conv_levels'
            weights = numpy.stack([random_words(self.rng, (K,), 9 * C)
                                   for _ in range(self.kw)], axis=1)
            arrays = dict(thresholds=random_thresholds(
                self.rng, K, 2 ** self.ka - 1, spread))
            meta = levels_meta(self.kw, self._in_bits(), self.ka)
        self.layers.append(Layer(
            'conv{}'.format(len(self.layers) + 1), kind, C * H * W,
            K * H2 * W2, 'levels' if meta else 'sign', weights, conv=conv,
            levels=meta, flipped=flipped, **arrays))
        self.shape = (K, H2, W2)
        self._next_spread()
        return self

    def dense(self, units, last=False):
        n = int(numpy.prod(self.shape))
        first = not self.layers
        spread = self.value_spread * numpy.sqrt(n)
        if self.kw is None:
            kind = 'planes' if first else 'xnor'
            weights = random_words(self.rng, (units,), n)
            meta = None
            count = 1
        else:
            kind = 'levels_pixels' if first else 'levels'
            weights = numpy.stack([random_words(self.rng, (units,), n)
                                   for _ in range(self.kw)], axis=1)
            meta = levels_meta(self.kw, self._in_bits(),
                               None if last else self.ka)
            count = 2 ** self.ka - 1
        if last:
            output, arrays = 'affine', random_affine(self.rng, units, spread)
        else:
            output = 'levels' if meta else 'sign'
            arrays = dict(thresholds=random_thresholds(
                self.rng, units, count, spread, sign=meta is None))
        self.layers.append(Layer('fc{}'.format(len(self.layers) + 1), kind, n,
                                 units, output, weights, levels=meta,
                                 **arrays))
        self.shape = (units,)
        self._next_spread()
        return self

    def network(self, shape):
        network = packed_format.PackedNetwork(
            self.layers, {'size': self.size, 'shape': list(shape),
                          'dataset': 'mnist', 'pixel_bits': 8, 'scale': 255,
                          'shift': 0}, {'snapshot': 'random'})
        if tuple(shape) != MNIST_SHAPE:
            return network  # images of no data set: no file holds them
        # through the file's checks, as export.py's networks are
        return packed_format.decode(packed_format.encode(network))


def mlp(rng):
    return Builder(rng, MNIST).dense(33).dense(70).dense(65).dense(
        10, last=True).network(MNIST)


def one_layer(rng):
    return Builder(rng, MNIST).dense(10, last=True).network(MNIST)


def cnn(rng):
    # 28 -> 14 (pooled), 70 channels (2 words) unpooled, 7 -> 4 pooled; a
    # dense layer on 20 channels (positions spread to whole words)
    return Builder(rng, MNIST).conv(5, True).conv(70, False).conv(
        65, True).conv(20, True).dense(33).dense(10, last=True).network(
            MNIST)


def cnn_odd(rng):
    return Builder(rng, ODD).conv(16, True).conv(64, True).dense(
        7, last=True).network(ODD)


def levels_mlp(bits):
    def make(rng):
        return Builder(rng, MNIST, *bits).dense(33).dense(70).dense(
            10, last=True).network(MNIST)
    return make


def levels_cnn(bits, shape):
    def make(rng):
        return Builder(rng, shape, *bits).conv(5, True).conv(70, False).conv(
            3, True).dense(10, last=True).network(shape)
    return make


NETWORKS = {
    'mlp': mlp, 'one_layer': one_layer, 'cnn': cnn, 'cnn_odd': cnn_odd,
    'levels_mlp_2_2': levels_mlp((2, 2)), 'levels_mlp_3_1': levels_mlp((3, 1)),
    'levels_mlp_1_4': levels_mlp((1, 4)), 'levels_mlp_4_3': levels_mlp((4, 3)),
    'levels_cnn_2_2': levels_cnn((2, 2), MNIST),
    'levels_cnn_1_3': levels_cnn((1, 3), ODD),
    'levels_cnn_3_1': levels_cnn((3, 1), MNIST),
}


@pytest.fixture(scope='module')
def mnist_images():
    return mnist.load_raw()['test'][0][:150]


def images_for(network, mnist_images):
    if network.input['size'] == 784:
        return mnist_images
    rng = numpy.random.default_rng(1)
    images = rng.integers(0, 256, (150, network.input['size']), numpy.uint8)
    images[:20] = 0  # blank ones, and some that are mostly 0
    images[20:60] *= rng.random(images[20:60].shape) < 0.3
    return images


@pytest.fixture(scope='module', params=sorted(NETWORKS))
def model(request, tmp_path_factory, mnist_images):
    """A random network of each family, its C source, images and the
    reference logits."""
    network = NETWORKS[request.param](numpy.random.default_rng(
        sorted(NETWORKS).index(request.param)))
    files = c_source.generate(network)
    directory = helpers.write_model(
        tmp_path_factory.mktemp(request.param), files)
    images = images_for(network, mnist_images)
    logits = packed_forward.forward(network, images, 'numpy')
    return request.param, network, directory, images, logits


def test_logits_equal_the_reference(model):
    helpers.require_tools('gcc')
    name, network, directory, images, expected = model
    # the outputs vary: the test would see a wrong bit
    assert len(numpy.unique(expected, axis=0)) >= 20, name
    assert len(numpy.unique(expected.argmax(axis=1))) >= 2, name
    # AddressSanitizer: every access inside the buffers, the scratch of
    # QNN_SCRATCH_WORDS on the stack of qnn_predict included
    sanitize = ['-fsanitize=address,undefined', '-fno-sanitize-recover=all']
    program = helpers.build_hosted(directory, ['gcc'], ['-O1', '-g'] +
                                        sanitize, 'checked', link=sanitize)
    os.environ.setdefault('ASAN_OPTIONS', 'detect_leaks=0')
    records = helpers.run_hosted(program, images, expected.shape[1])
    helpers.assert_bits_equal(records, expected, name)


def test_clang_gives_the_same_logits(model):
    helpers.require_tools('clang')
    name, network, directory, images, expected = model
    program = helpers.build_hosted(
        directory, ['clang'], ['-O2'] + helpers.C_CONTRACT, 'clang')
    records = helpers.run_hosted(program, images, expected.shape[1])
    helpers.assert_bits_equal(records, expected, name)


@pytest.mark.parametrize('compiler', ['gcc', 'clang'])
@pytest.mark.parametrize('level', ['-O2', '-Os'])
def test_compiles_cleanly(model, compiler, level):
    helpers.require_tools(compiler)
    directory = model[2]
    helpers.compile_object(directory, [compiler], [level],
                                '{}{}.o'.format(compiler, level))


def test_writes_no_global_and_calls_nothing(model):
    """No global but the ``static const`` arrays (nm: only text and
    read-only data defined), no library function but the memset and
    memcpy a compiler may call for a loop."""
    helpers.require_tools('gcc')
    directory = model[2]
    obj = helpers.compile_object(directory, ['gcc'], ['-O2'], 'nm.o')
    symbols = helpers.run_tool(['nm', obj]).split('\n')
    kinds = {line.split()[-2]: line for line in symbols if line.strip()}
    assert set(kinds) <= {'T', 't', 'R', 'r', 'U'}, kinds
    undefined = {line.split()[-1] for line in symbols
                 if line.split()[-2:-1] == ['U']}
    assert undefined <= {'memset', 'memcpy'}, undefined
    defined = {line.split()[-1] for line in symbols
               if line.split()[-2:-1] == ['T']}
    assert defined == {'qnn_predict', 'qnn_predict_scratch'}


def test_header_and_includes(model):
    name, network, directory = model[:3]
    with open(os.path.join(directory, 'qnn_model.h')) as f:
        header = f.read()
    with open(os.path.join(directory, 'qnn_model.c')) as f:
        source = f.read()
    assert '#define QNN_INPUT_SIZE {}\n'.format(network.input['size']) in \
        header
    assert '#define QNN_CLASSES {}\n'.format(network.layers[-1].n_out) in \
        header
    assert 'int qnn_predict(const uint8_t *pixels, float *logits);' in header
    assert re.findall(r'#include\s*(\S+)', header) == ['<stdint.h>']
    assert re.findall(r'#include\s*(\S+)', source) == ['<stdint.h>',
                                                      '"qnn_model.h"']
    assert 'malloc' not in source and 'printf' not in source
    # at file scope: functions and static const arrays only
    assert not [line for line in source.splitlines()
                if line.startswith('static') and '(' not in line and
                not line.startswith('static const ')]
    assert len(re.findall(r'^static const \w+ \w+\[\d+\] = \{', source,
                          re.M)) == len(re.findall(r'^\S.*\] = \{', source,
                                                   re.M))


def test_scratch_size_is_the_plan():
    network = cnn(numpy.random.default_rng(0))
    layers = c_source.plan(network)
    words = sum(c_source.scratch_plan(layers))
    assert '#define QNN_SCRATCH_WORDS {}\n'.format(words) in \
        c_source.generate(network)['qnn_model.h']
    # two feature maps at most: the largest output and the one before
    largest = max(c.out_planes * c.out_words for c in layers)
    assert largest < words <= 2 * largest


@pytest.mark.parametrize('flag', ['-ffast-math', '-Ofast'])
def test_fast_math_is_refused(tmp_path, flag):
    helpers.require_tools('gcc')
    directory = helpers.write_model(tmp_path, c_source.generate(
        one_layer(numpy.random.default_rng(0))))
    result = subprocess.run(['gcc', '-std=c99', flag, '-c', 'qnn_model.c'],
                            cwd=directory, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            universal_newlines=True)
    assert result.returncode != 0
    assert '-ffast-math (or -Ofast) changes the logits' in result.stdout


def test_words_spread_to_positions():
    rng = numpy.random.default_rng(0)
    bits = rng.random((4, 6 * 70)) < 0.5
    words = c_source.pack_bits(bits)
    spread = c_source.spread_to_positions(words, 6, 70)
    assert spread.shape == (4, 6 * 2)
    back = c_source.unpack_bits(spread.reshape(4, 6, 2), 70)
    numpy.testing.assert_array_equal(back.reshape(4, -1), bits)
    # bit i % 64 of word i // 64, 1 for a set value
    assert int(words[0, 0]) == sum(1 << i for i in range(64) if bits[0, i])


def test_hostile_names_stay_in_comments(tmp_path):
    helpers.require_tools('gcc')
    network = mlp(numpy.random.default_rng(0))
    payload = '*/ int injected = 1; /* \\\n??/ `x` | y'
    network.layers[0].name = payload
    network.source = {'snapshot': payload, 'config': {'arch': payload}}
    network.input['dataset'] = payload
    files = c_source.generate(network)
    for text in files.values():
        assert '*/ int' not in text and '\\' not in text and '`x`' not in text
    directory = helpers.write_model(tmp_path, files)
    obj = helpers.compile_object(directory, ['gcc'], ['-O2'], 'm.o')
    assert 'injected' not in helpers.run_tool(['nm', obj])
    # the comments hold it all: the preprocessor removes every trace
    code = helpers.run_tool(['gcc', '-E', '-P', 'qnn_model.c'], cwd=directory)
    assert 'injected' not in code


def test_unknown_layer_kind_is_refused():
    network = mlp(numpy.random.default_rng(0))
    network.layers[1].kind = 'wage'
    with pytest.raises(c_source.UnsupportedNetwork,
                       match=r"layer 2 \(fc2\) is of kind 'wage'"):
        c_source.generate(network)


def test_sums_beyond_int32_are_refused():
    # 4-bit weights on 700,000 pixels: 3 x 255 x 700,000 x 15 > 2^31
    n = 700000
    rng = numpy.random.default_rng(0)
    weights = numpy.zeros((2, 4, n_words(n)), numpy.uint64)
    layer = Layer('big', 'levels_pixels', n, 2, 'affine', weights,
                  levels=levels_meta(4, 8, None),
                  **random_affine(rng, 2, 1.))
    network = packed_format.PackedNetwork(
        [layer], {'size': n, 'shape': [1, 1, n], 'pixel_bits': 8,
                  'scale': 255, 'shift': 0})
    with pytest.raises(c_source.UnsupportedNetwork, match='int32_t'):
        c_source.generate(network)


def test_readme_states_the_memory(model):
    network, directory = model[1], model[2]
    with open(os.path.join(directory, 'README.md')) as f:
        readme = f.read()
    layers = c_source.plan(network)
    constants = c_source.constant_bytes(layers)
    assert '| {} |'.format(constants) in readme
    assert '| {} |'.format(8 * sum(c_source.scratch_plan(layers))) in readme
    assert '-ffp-contract=off' in readme and 'qnn_predict(pixels, logits)' \
        in readme
    assert constants >= sum(layer.weights.nbytes for layer in
                            network.layers if layer.kind not in (
                                'conv_pixels', 'conv_levels_pixels'))


def test_gcc_is_given_the_interface_only(tmp_path):
    """A program that uses the header alone builds against the object."""
    helpers.require_tools('gcc')
    network = one_layer(numpy.random.default_rng(0))
    directory = helpers.write_model(tmp_path,
                                         c_source.generate(network))
    user = os.path.join(directory, 'user.c')
    with open(user, 'w') as f:
        f.write('#include "qnn_model.h"\n'
                'int main(void)\n{\n'
                '    static const uint8_t pixels[QNN_INPUT_SIZE];\n'
                '    float logits[QNN_CLASSES];\n'
                '    static uint64_t scratch[QNN_SCRATCH_WORDS];\n'
                '    int a = qnn_predict(pixels, logits);\n'
                '    int b = qnn_predict_scratch(pixels, logits, scratch);\n'
                '    return a == b && a >= 0 && a < QNN_CLASSES ? 0 : 1;\n'
                '}\n')
    obj = helpers.compile_object(directory, ['gcc'], ['-O2'], 'm.o')
    program = os.path.join(directory, 'user')
    helpers.run_tool(['gcc'] + helpers.C_STRICT + [user, obj, '-o',
                                                      program])
    assert subprocess.run([program]).returncode == 0

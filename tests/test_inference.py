"""Packed layers against Chainer's float layers; kernels; the file format;
inference.py's errors."""
import os
import re

import numpy
import pytest

import chainer
import chainer.functions as F

import function_quantized_linear
import inference
from qnn.packed import folding
from qnn.packed import format as packed_format
from qnn.packed import kernels as packed_kernels
from qnn.packed import summary as packed_summary
import qst

WIDTHS = [(784, 1000), (1000, 10), (33, 33), (1000, 1000), (10, 784)]


def chainer_sign_layer(x, W, bn):
    """Chainer's evaluation-mode hidden unit: sign(BN(x q(W)^T))."""
    with chainer.using_config('train', False):
        a = function_quantized_linear.quantized_linear(
            x.astype(numpy.float32), W.astype(numpy.float32))
        y = F.fixed_batch_normalization(
            a, *[v.astype(numpy.float32) for v in bn],
            eps=folding.DEFAULT_EPS)
        return qst.qst(y).array > 0


def random_bn(rng, units, spread):
    """gamma with negative and zero entries; mean inside the range the
    pre-activation can take."""
    gamma = rng.normal(size=units)
    gamma[::7] = 0
    gamma[1::5] *= -1
    beta = rng.normal(size=units)
    beta[::14] = -abs(beta[::14])  # some gamma = 0 units never fire
    mean = rng.normal(size=units) * spread
    var = rng.random(units) * spread ** 2 + 0.01
    return gamma, beta, mean, var


def sign_layer(kind, bits, thresholds):
    return packed_format.Layer('l', kind, bits.shape[1], bits.shape[0],
                               'sign', packed_kernels.pack_bits(bits),
                               thresholds=thresholds)


@pytest.mark.parametrize('n', [1, 10, 33, 63, 64, 65, 784, 1000])
def test_pack_bits_layout_and_padding(n):
    rng = numpy.random.default_rng(n)
    # two leading axes: the rows are packed as one flat run of bytes
    bits = rng.random((2, 3, n)) < 0.5
    words = packed_kernels.pack_bits(bits)
    assert words.shape == (2, 3, (n + 63) // 64)
    assert words.dtype == numpy.uint64
    for i in (0, n // 2, n - 1):
        assert bool(words[1, 2, i // 64] >> numpy.uint64(i % 64) & 1) == \
            bits[1, 2, i]
    if n % 64:
        assert not (words[..., -1] >> numpy.uint64(n % 64)).any()
    numpy.testing.assert_array_equal(
        packed_kernels.unpack_bits(words, n), bits)
    assert packed_kernels.pack_bits(bits[:0]).shape == (0, 3, (n + 63) // 64)


@pytest.mark.parametrize('n_in,n_out', WIDTHS)
@pytest.mark.parametrize('backend', ['numpy', 'numba'])
def test_xnor_layer_equals_chainer_float_layer(n_in, n_out, backend):
    rng = numpy.random.default_rng(n_in * 7 + n_out)
    x = numpy.where(rng.random((50, n_in)) < 0.5, -1.0, 1.0)
    W = rng.normal(size=(n_out, n_in))
    bn = random_bn(rng, n_out, numpy.sqrt(n_in))
    bits, T = folding.fold_sign_from_signs(W, *bn)
    out = packed_kernels.sign_layer(
        sign_layer('xnor', bits, T), packed_kernels.pack_signs(x), backend)
    expected = chainer_sign_layer(x, W, bn)
    numpy.testing.assert_array_equal(out, expected)
    assert 0 < expected.mean() < 1


# pixels p / 255 in [0, 1], and 2 p / 255 - 1 in [-1, 1] (--input-range)
PIXEL_RANGES = [(255, 0.), (127.5, -1.)]


@pytest.mark.parametrize('n_in,n_out', WIDTHS)
@pytest.mark.parametrize('backend', ['numpy', 'numba'])
@pytest.mark.parametrize('scale,shift', PIXEL_RANGES)
def test_pixel_layer_equals_float_layer(n_in, n_out, backend, scale, shift):
    rng = numpy.random.default_rng(n_in + n_out)
    pixels = rng.integers(0, 256, size=(40, n_in)).astype(numpy.uint8)
    pixels[0] = 0  # s = 0 for every unit
    W = rng.normal(size=(n_out, n_in))
    # the pre-activation's spread, around shift * sum(w) with a shift
    bn = random_bn(rng, n_out, 60 * numpy.sqrt(n_in) / scale)
    w = numpy.where(W >= 0, 1., -1.)
    bn[2][:] += shift * w.sum(axis=1)
    bits, T = folding.fold_sign_from_pixels(W, *bn, scale=scale, shift=shift)
    out = packed_kernels.sign_layer(sign_layer('planes', bits, T), pixels,
                                    backend)
    # exact: float64 of the integer sums (below 2^53)
    s = pixels.astype(numpy.float64) @ w.T
    a = s / scale + shift * w.sum(axis=1)
    gamma, beta, mean, var = bn
    y = gamma * (a - mean) / numpy.sqrt(var + folding.DEFAULT_EPS) + beta
    numpy.testing.assert_array_equal(out, y >= 0)
    # Chainer's float32 layer (BLAS's order of summation) agrees but where
    # y is within float32 rounding of 0
    x = pixels / numpy.float32(scale) + numpy.float32(shift)
    chainer_out = chainer_sign_layer(x, W, bn)
    near = abs(y) < 1e-4 * (1 + abs(gamma) * (
        abs(s) / scale + abs(shift * w.sum(axis=1))))
    assert (out == chainer_out)[~near].all()
    assert near.mean() < 0.01


@pytest.mark.parametrize('sign', [1, -1])
def test_ties_at_the_threshold_are_plus_one(sign):
    # BN(a) = 0 exactly where a = mean: sign(0) = +1, for either sign of
    # gamma, in Chainer and in the packed layer
    n = 33
    rng = numpy.random.default_rng(0)
    x = numpy.where(rng.random((64, n)) < 0.5, -1.0, 1.0)
    W = rng.normal(size=(5, n))
    a = x @ numpy.where(W >= 0, 1., -1.).T
    mean = a[0].copy()  # image 0 sits on every unit's threshold
    bn = (numpy.full(5, 0.5 * sign), numpy.zeros(5), mean, numpy.ones(5))
    bits, T = folding.fold_sign_from_signs(W, *bn)
    out = packed_kernels.sign_layer(
        sign_layer('xnor', bits, T), packed_kernels.pack_signs(x), 'numba')
    assert out[0].all()
    numpy.testing.assert_array_equal(out, chainer_sign_layer(x, W, bn))
    # pixels: the all-zero image gives s = 0 = 255 * mean
    pixels = rng.integers(0, 256, size=(8, n)).astype(numpy.uint8)
    pixels[0] = 0
    bn = (numpy.full(5, 0.5 * sign), numpy.zeros(5), numpy.zeros(5),
          numpy.ones(5))
    bits, T = folding.fold_sign_from_pixels(W, *bn)
    out = packed_kernels.sign_layer(sign_layer('planes', bits, T), pixels,
                                    'numba')
    assert out[0].all()


def test_gamma_zero_is_the_sign_of_beta():
    W = numpy.ones((4, 10))
    bn = (numpy.zeros(4), numpy.array([1., 0., -1e-30, -2.]), numpy.zeros(4),
          numpy.ones(4))
    for fold in (folding.fold_sign_from_signs, folding.fold_sign_from_pixels):
        bits, T = fold(W, *bn)
        kind = 'xnor' if fold is folding.fold_sign_from_signs else 'planes'
        x = numpy.zeros((3, 10), numpy.uint8)
        x[1] = 1
        x[2] = 255
        if kind == 'xnor':
            x = packed_kernels.pack_bits(x > 0)
        out = packed_kernels.sign_layer(sign_layer(kind, bits, T), x,
                                        'numpy')
        numpy.testing.assert_array_equal(
            out, numpy.tile([True, True, False, False], (3, 1)))


def test_nan_cannot_be_folded():
    with pytest.raises(folding.FoldingError, match='NaN'):
        folding.fold_sign_from_signs(numpy.full((2, 3), numpy.nan),
                                     *numpy.ones((4, 2)))


def random_network(rng, sizes):
    layers = []
    for index, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        W = rng.normal(size=(n_out, n_in))
        name = 'l{}'.format(index + 1)
        kind = 'planes' if index == 0 else 'xnor'
        if index == len(sizes) - 2:
            bits, affine = folding.fold_affine(
                W, *random_bn(rng, n_out, numpy.sqrt(n_in)))
            layers.append(packed_format.Layer(
                name, kind, n_in, n_out, 'affine',
                packed_kernels.pack_bits(bits), **dict(zip(
                    ('mean', 'inv_std', 'gamma', 'beta'), affine))))
            continue
        fold = folding.fold_sign_from_pixels if index == 0 \
            else folding.fold_sign_from_signs
        spread = numpy.sqrt(n_in) * (60 / 255 if index == 0 else 1)
        bits, T = fold(W, *random_bn(rng, n_out, spread))
        layers.append(packed_format.Layer(name, kind, n_in, n_out, 'sign',
                                          packed_kernels.pack_bits(bits),
                                          thresholds=T))
    return packed_format.PackedNetwork(
        layers, {'size': sizes[0], 'pixel_bits': 8, 'scale': 255})


@pytest.mark.parametrize('sizes', [(784, 1000, 1000, 10), (33, 65, 10),
                                   (784, 33, 100, 33, 10)])
def test_numba_equals_numpy_reference(sizes):
    rng = numpy.random.default_rng(len(sizes))
    network = random_network(rng, sizes)
    pixels = rng.integers(0, 256, size=(37, sizes[0])).astype(numpy.uint8)
    expected = packed_kernels.layer_sums(network.layers, pixels, 'numpy')
    numpy.testing.assert_array_equal(
        packed_kernels.layer_sums(network.layers, pixels, 'numba'), expected)
    assert len(numpy.unique(expected)) > 5


@pytest.mark.gpu
def test_pack_bits_cupy_equals_numpy():
    import cupy
    bits = numpy.random.default_rng(1).random((2, 8, 785)) < 0.5
    words = packed_kernels.pack_bits(cupy.asarray(bits))
    assert isinstance(words, cupy.ndarray)
    numpy.testing.assert_array_equal(cupy.asnumpy(words),
                                     packed_kernels.pack_bits(bits))


@pytest.mark.gpu
def test_cupy_equals_numpy_reference():
    import cupy
    rng = numpy.random.default_rng(3)
    for sizes in ((784, 1000, 1000, 10), (33, 65, 10)):
        network = random_network(rng, sizes)
        pixels = rng.integers(0, 256, size=(37, sizes[0])).astype(
            numpy.uint8)
        numpy.testing.assert_array_equal(
            cupy.asnumpy(packed_kernels.layer_sums(network.layers, pixels,
                                                   'cupy')),
            packed_kernels.layer_sums(network.layers, pixels, 'numpy'))


@pytest.fixture(scope='module')
def packed_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('packed') / 'net.bnn')
    network = random_network(numpy.random.default_rng(5), (784, 33, 10))
    # what a file's input says besides the size (docs/deployment.md)
    network.input.update(dataset='mnist', shape=[1, 28, 28], shift=0)
    packed_format.save(path, network)
    return path


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


def run_inference(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        inference.main(list(argv))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def damage(data, how):
    data = bytearray(data)
    if how == 'flipped byte':
        data[len(data) // 2] ^= 0x10
    elif how == 'truncated':
        data = data[:len(data) - 100]
    elif how == 'empty':
        data = b''
    elif how == 'foreign':
        data = b'\x89PNG\r\n\x1a\n' + bytes(data[8:])
    elif how == 'version':
        data[8] = packed_format.VERSION + 1
    elif how == 'extra bytes':
        data += b'\0'
    elif how == 'header':
        data[20] ^= 0x01
    return bytes(data)


@pytest.mark.parametrize('how,message', [
    ('flipped byte', 'checksum'), ('truncated', 'truncated'),
    ('empty', 'not a packed network'), ('foreign', 'not a packed network'),
    ('version', 'version {}'.format(packed_format.VERSION + 1)),
    ('extra bytes', 'after its end'),
    ('header', '(damaged|checksum)')])
def test_damaged_file_one_line_exit_1(packed_file, tmp_path, capsys, how,
                                      message):
    path = str(tmp_path / 'bad.bnn')
    with open(packed_file, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(damage(data, how))
    code, out, err = run_inference(capsys, path, '--test-subset', '5')
    assert code == 1 and out == ''
    assert err.count('\n') == 1 and path in err
    assert re.search(message, err), err


def test_missing_file_and_bad_arguments(tmp_path, capsys):
    path = str(tmp_path / 'none.bnn')
    code, out, err = run_inference(capsys, path)
    assert code == 1 and err.count('\n') == 1 and path in err
    code, out, err = run_inference(capsys, path, '--test-subset', '0')
    assert code == 2 and 'Traceback' not in err
    code, out, err = run_inference(capsys, path, '--device', 'gpu')
    assert code == 2


def test_summary_option(packed_file, capsys):
    assert inference.main([packed_file, '--summary']) == 0
    out = capsys.readouterr()[0]
    assert 'file size: {} bytes'.format(os.path.getsize(packed_file)) in out
    assert re.search(r'^l1 +bit-plane dense, sign +784x33 ', out, re.M)


def test_inference_line(packed_file, capsys):
    assert inference.main([packed_file, '--test-subset', '30']) == 0
    out = capsys.readouterr()[0]
    assert re.fullmatch(r'accuracy: \d\.\d{4} \(30 images, \d+\.\d{3} s, '
                        r'\d+ images/s\)\n', out), out


def test_inference_threads_set_defaults_and_keep_the_users(monkeypatch):
    from qnn.backends import inference_threads
    monkeypatch.delenv('OPENBLAS_THREAD_TIMEOUT', raising=False)
    monkeypatch.setenv('NUMBA_THREADING_LAYER', 'workqueue')
    inference_threads.configure()
    assert os.environ['OPENBLAS_THREAD_TIMEOUT'] == '4'
    assert os.environ['NUMBA_THREADING_LAYER'] == 'workqueue'

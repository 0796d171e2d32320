"""Packed binarized convolutions against Chainer's float ConvNet.

Layers: the integer sums of the NumPy reference against Chainer's own
convolution (zero padding) and max pooling of the same +-1 values, the
numba kernels against the reference, on odd sizes and channel counts that
fill no word; the folded thresholds against Chainer's evaluation-mode
batch normalization and sign with gamma < 0, gamma = 0 and ties at the
threshold. Networks: a trained BinaryConvNet exported by export.py gives
Chainer's logits to the bit on the MNIST test images, and inference.py
runs it on the data set it was trained on.
"""
import json
import os
import subprocess
import sys

import numpy
import pytest

import chainer
import chainer.functions as F

import export
import qst
import train_mnist
from qnn import datasets
from qnn.datasets import fashion_mnist
from qnn.packed import conv_kernels
from qnn.packed import convnet
from qnn.packed import folding
from qnn.packed import format as packed_format
from qnn.packed import bits as packed_bits
from qnn.packed import forward as packed_forward
from qnn.training import options as train_options
from qnn.training.extensions import snapshots

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (in channels, height, width, out channels, pool): odd sizes, channel
# counts that fill no word, and more than a word
SHAPES = [(3, 7, 5, 5, True), (16, 14, 14, 32, True), (70, 4, 3, 65, False),
          (1, 1, 1, 2, True), (64, 7, 7, 64, True)]


def chainer_layer(x, W, bn, pool):
    """Chainer's evaluation-mode block on +-1 or pixel values ``x``:
    sign(BN(MP(conv(x, W)))), with sign(0) = +1."""
    with chainer.using_config('train', False):
        a = F.convolution_2d(x.astype(numpy.float32),
                             W.astype(numpy.float32), pad=1)
        if pool:
            a = F.max_pooling_2d(a, 2, cover_all=True)
        y = F.fixed_batch_normalization(
            a, *[numpy.asarray(v, numpy.float32) for v in bn],
            eps=folding.DEFAULT_EPS)
        return a.array, qst.qst(y).array > 0


def random_bn(rng, channels, bound):
    """gamma with negative and zero entries (beta of both signs there);
    some means on an integer with beta 0: a tie at the threshold."""
    gamma = rng.normal(size=channels)
    gamma[::4] *= -1
    gamma[2::7] = 0
    beta = rng.normal(size=channels)
    mean = rng.uniform(-bound / 3, bound / 3, size=channels)
    var = rng.uniform(0.5, 4, size=channels) * bound
    ties = slice(1, None, 3)
    mean[ties] = numpy.round(mean[ties])
    beta[ties] = 0
    return [v.astype(numpy.float32) for v in (gamma, beta, mean, var)]


def folded_layer(rng, shape, first):
    C, H, W, K, pool = shape
    weights = rng.normal(size=(K, C, 3, 3)).astype(numpy.float32)
    bound = 9 * C * (255 if first else 1)
    bn = random_bn(rng, K, bound)
    params = {'conv/W': weights}
    params.update({'bn/' + key: value
                   for key, value in zip(convnet.BN_KEYS, bn)})
    layer = convnet._conv_layer(params, 'conv', 'bn', (C, H, W), K, pool,
                                first, scale=1.)
    return layer, numpy.where(weights >= 0, 1, -1), bn


def random_maps(rng, n, C, H, W):
    """+-1 feature maps ``(n, C, H, W)`` and their packed words."""
    values = rng.choice([-1, 1], size=(n, C, H, W))
    words = packed_bits.pack_bits(values.transpose(0, 2, 3, 1) > 0)
    return values, words


@pytest.mark.parametrize('shape', SHAPES)
def test_xnor_layer_is_chainers_block(shape):
    rng = numpy.random.RandomState(sum(shape[:4]))
    layer, signs, bn = folded_layer(rng, shape, first=False)
    values, words = random_maps(rng, 6, *shape[:3])
    sums, expected = chainer_layer(values, signs, bn, shape[4])
    # the reference's integer sums are Chainer's (with the unflipped
    # weights: compare where gamma >= 0), and its bits Chainer's signs
    flipped = bn[0] < 0
    reference = conv_kernels.reference_sums(layer, words)
    numpy.testing.assert_array_equal(reference[:, ~flipped],
                                     sums[:, ~flipped])
    out = conv_kernels.reference_layer(layer, words)
    bits = packed_bits.unpack_signs(out, shape[3]) > 0
    numpy.testing.assert_array_equal(bits.transpose(0, 3, 1, 2), expected)
    numpy.testing.assert_array_equal(
        conv_kernels.numba_layer(layer, words), out)


@pytest.mark.parametrize('shape', [(1, 28, 28, 16, True),
                                   (3, 9, 7, 5, False)])
def test_pixel_layer_is_chainers_block(shape):
    rng = numpy.random.RandomState(7)
    layer, signs, bn = folded_layer(rng, shape, first=True)
    C, H, W = shape[:3]
    pixels = rng.randint(0, 256, size=(5, C * H * W)).astype(numpy.uint8)
    # scale 1: the layer's input is the pixel itself, so Chainer's float32
    # sums are exact integers too
    _, expected = chainer_layer(pixels.reshape(5, C, H, W), signs, bn,
                                shape[4])
    out = conv_kernels.reference_layer(layer, pixels)
    bits = packed_bits.unpack_signs(out, shape[3]) > 0
    numpy.testing.assert_array_equal(bits.transpose(0, 3, 1, 2), expected)
    numpy.testing.assert_array_equal(
        conv_kernels.numba_layer(layer, pixels), out)


def test_border_taps_count_only_inside_the_image():
    # all +1 maps and weights: each position sums its valid taps times C
    C, H, W = 3, 4, 5
    weights = numpy.ones((1, C, 3, 3), numpy.float32)
    params = {'conv/W': weights}
    params.update({'bn/' + key: numpy.ones(1, numpy.float32)
                   for key in convnet.BN_KEYS})
    layer = convnet._conv_layer(params, 'conv', 'bn', (C, H, W), 1, False,
                                False, scale=1.)
    _, words = random_maps(numpy.random.RandomState(0), 1, C, H, W)
    words[...] = packed_bits.pack_bits(numpy.ones((1, H, W, C), bool))
    rows = numpy.array([2, 3, 3, 2])[:, None]
    columns = numpy.array([2, 3, 3, 3, 2])[None, :]
    numpy.testing.assert_array_equal(
        conv_kernels.reference_sums(layer, words)[0, 0],
        C * rows * columns)


def test_constant_channels_fold_to_always_or_never():
    rng = numpy.random.RandomState(3)
    layer, signs, bn = folded_layer(rng, (4, 5, 5, 8, True), first=False)
    zero = bn[0] == 0
    assert zero.any()
    values, words = random_maps(rng, 4, 4, 5, 5)
    bits = packed_bits.unpack_signs(
        conv_kernels.reference_layer(layer, words), 8) > 0
    for channel in numpy.flatnonzero(zero):
        assert (bits[..., channel] == (bn[1][channel] >= 0)).all()


def test_flatten_is_row_column_channel_order():
    rng = numpy.random.RandomState(1)
    for channels in (5, 64, 70):
        values, words = random_maps(rng, 2, channels, 3, 2)
        flat = conv_kernels.flatten(words, channels)
        expected = packed_bits.pack_bits(
            values.transpose(0, 2, 3, 1).reshape(2, -1) > 0)
        numpy.testing.assert_array_equal(flat, expected)


@pytest.fixture(scope='module')
def trained_cnn(tmp_path_factory):
    """The small BinaryConvNet after one epoch on 500 MNIST images, and its
    packed file."""
    out = tmp_path_factory.mktemp('cnn')
    assert train_mnist.main([
        '--arch', 'cnn', '--epoch', '1', '--train-subset', '500',
        '--test-subset', '100', '--batchsize', '50', '--noplot',
        '--out', str(out)]) == 0
    snapshot = str(out / 'snapshot_iter_10')
    packed = str(out / 'cnn.bnn')
    assert export.main([snapshot, '-o', packed]) == 0
    return snapshot, packed


def chainer_logits(snapshot, images, options):
    args = train_options.parse_args(options)
    model = train_mnist.build_model(args)
    snapshots.load_arrays(snapshot, model, 'updater/model:main/')
    x = images.astype(numpy.float32) / 255
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        return numpy.concatenate([model.predictor(x[lo:lo + 500]).array
                                  for lo in range(0, len(x), 500)])


def test_exported_cnn_gives_chainers_logits(trained_cnn):
    snapshot, packed = trained_cnn
    network = packed_format.load(packed)
    assert [layer.kind for layer in network.layers] == [
        'conv_pixels', 'conv_xnor', 'conv_xnor', 'xnor', 'xnor', 'xnor']
    assert network.input['dataset'] == 'mnist'
    images = datasets.load_raw('mnist')['test'][0]
    logits = packed_forward.forward(network, images, 'numba')
    numpy.testing.assert_array_equal(
        logits, chainer_logits(snapshot, images, ['--arch', 'cnn']))
    numpy.testing.assert_array_equal(
        packed_forward.forward(network, images[:50], 'numpy'), logits[:50])


@pytest.mark.gpu
def test_exported_cnn_on_cupy_gives_the_same_logits(trained_cnn):
    import cupy
    network = packed_format.load(trained_cnn[1])
    images = datasets.load_raw('mnist')['test'][0][:500]
    numpy.testing.assert_array_equal(
        cupy.asnumpy(packed_forward.forward(network, images, 'cupy')),
        packed_forward.forward(network, images, 'numba'))


def test_inference_writes_the_predictions(trained_cnn, tmp_path):
    _, packed = trained_cnn
    predictions = tmp_path / 'predictions.txt'
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'inference.py'), packed,
         '--test-subset', '300', '--predictions', str(predictions)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('accuracy: ')
    lines = predictions.read_text().splitlines()
    images = datasets.load_raw('mnist')['test'][0][:300]
    expected = packed_forward.forward(packed_format.load(packed), images,
                                      'numba').argmax(axis=1)
    assert lines == [str(c) for c in expected]


def test_a_cnn_on_pixels_in_minus_one_one_is_refused(trained_cnn, tmp_path,
                                                     capsys):
    snapshot, _ = trained_cnn
    with open(os.path.join(os.path.dirname(snapshot), 'config.json')) as f:
        config = json.load(f)
    config['input_range'] = 'symmetric'
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'config.json').write_text(json.dumps(config))
    os.symlink(snapshot, str(run / 'snapshot_iter_10'))
    output = run / 'cnn.bnn'
    with pytest.raises(SystemExit) as e:
        export.main([str(run / 'snapshot_iter_10'), '-o', str(output)])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pixels in [-1, 1]' in err[0], err
    assert not output.exists()


def test_fashion_mnist_cnn_runs_on_fashion_mnist(tmp_path):
    if not fashion_mnist.available():
        if os.environ.get('QNN_REQUIRE_FASHION_MNIST') == '1':
            pytest.fail('Fashion-MNIST is not installed (make fashion-mnist)')
        pytest.skip('Fashion-MNIST is not installed (make fashion-mnist)')
    out = tmp_path / 'run'
    options = ['--arch', 'cnn', '--dataset', 'fashion-mnist']
    assert train_mnist.main(options + [
        '--epoch', '1', '--train-subset', '200', '--test-subset', '100',
        '--batchsize', '50', '--noplot', '--out', str(out)]) == 0
    packed = str(out / 'cnn.bnn')
    assert export.main([str(out / 'snapshot_iter_4'), '-o', packed]) == 0
    network = packed_format.load(packed)
    assert network.input['dataset'] == 'fashion-mnist'
    images, labels = datasets.load_raw('fashion-mnist')['test']
    logits = packed_forward.forward(network, images[:1000], 'numba')
    numpy.testing.assert_array_equal(logits, chainer_logits(
        str(out / 'snapshot_iter_4'), images[:1000], options))
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'inference.py'), packed,
         '--test-subset', '1000'], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split()[1])
    assert accuracy == pytest.approx(
        (logits.argmax(axis=1) == labels[:1000]).mean(), abs=5e-5)

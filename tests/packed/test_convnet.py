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

import export
from qnn import datasets
from qnn.datasets import fashion_mnist
from qnn.packed import format as packed_format
from qnn.packed import forward as packed_forward
from qnn.training import options as train_options
from qnn.training.extensions import snapshots
import train_mnist

from helpers import ROOT


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


def test_exported_cnn_one_image_a_call_equals_the_reference(trained_cnn):
    # batches of 1 and 3: the convolutions, then the dense layers in one
    # call ('tail'), whatever numba's threads
    network = packed_format.load(trained_cnn[1])
    images = datasets.load_raw('mnist')['test'][0][:7]
    expected = packed_forward.layer_sums(network.layers, images, 'numpy')
    for lo, hi in ((0, 1), (1, 4), (4, 5)):
        numpy.testing.assert_array_equal(packed_forward.layer_sums(
            network.layers, images[lo:hi], 'numba'), expected[lo:hi])
        numpy.testing.assert_array_equal(
            packed_forward.forward(network, images[lo:hi], 'numba'),
            packed_forward.affine_logits(expected[lo:hi],
                                         network.layers[-1]))


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

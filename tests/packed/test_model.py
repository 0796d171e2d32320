"""Trained k-bit networks folded by their options (qnn.packed.model) predict as
their Chainer models."""
import os
import subprocess
import sys

import numpy
import pytest

import export
from qnn import datasets
from qnn.packed import format as packed_format
from qnn.packed import forward as packed_forward
import train_mnist

from helpers import ROOT, chainer_predictions


def trained_and_exported(out, options, train_images):
    """A 2-bit network trained one epoch on ``train_images`` MNIST images
    (batch 50) in ``out`` with ``options``: its snapshot and packed
    file."""
    assert train_mnist.main(options + [
        '--weight-bits', '2', '--activation-bits', '2', '--epoch', '1',
        '--train-subset', str(train_images), '--test-subset', '100',
        '--batchsize', '50', '--noplot', '--out', str(out)]) == 0
    snapshot = str(out / 'snapshot_iter_{}'.format(train_images // 50))
    packed = str(out / 'net.bnn')
    assert export.main([snapshot, '-o', packed]) == 0
    return snapshot, packed


@pytest.fixture(scope='module')
def two_bit(tmp_path_factory):
    return trained_and_exported(tmp_path_factory.mktemp('two_bit'),
                                ['--unit', '48'], 1000)


def assert_predicts_as_chainer(snapshot, packed, kinds, images, checked):
    """The packed file's layer kinds are ``kinds``; its classes on
    ``images`` are the Chainer model's, and the NumPy reference gives the
    numba logits on the first ``checked``."""
    network = packed_format.load(packed)
    assert [layer.kind for layer in network.layers] == kinds
    logits = packed_forward.forward(network, images, 'numba')
    numpy.testing.assert_array_equal(
        logits.argmax(axis=1), chainer_predictions(snapshot, images))
    numpy.testing.assert_array_equal(
        packed_forward.forward(network, images[:checked], 'numpy'),
        logits[:checked])


def test_two_bit_mlp_predicts_as_its_chainer_model(two_bit):
    assert_predicts_as_chainer(
        *two_bit, ['levels_pixels', 'levels', 'levels'],
        datasets.load_raw('mnist')['test'][0], 200)


@pytest.fixture(scope='module')
def two_bit_cnn(tmp_path_factory):
    return trained_and_exported(tmp_path_factory.mktemp('two_bit_cnn'),
                                ['--arch', 'cnn'], 500)


def test_two_bit_cnn_predicts_as_its_chainer_model(two_bit_cnn):
    snapshot, packed = two_bit_cnn
    assert_predicts_as_chainer(
        snapshot, packed, ['conv_levels_pixels', 'conv_levels', 'conv_levels',
                           'levels', 'levels', 'levels'],
        datasets.load_raw('mnist')['test'][0][:1000], 100)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'inference.py'), packed,
         '--test-subset', '200'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('accuracy: ')


def test_two_bit_mlp_with_shift_bn_predicts_as_its_chainer_model(tmp_path):
    snapshot, packed = trained_and_exported(
        tmp_path, ['--unit', '48', '--bn', 'shift'], 1000)
    network = packed_format.load(packed)
    images = datasets.load_raw('mnist')['test'][0][:2000]
    numpy.testing.assert_array_equal(
        packed_forward.forward(network, images, 'numba').argmax(axis=1),
        chainer_predictions(snapshot, images))


@pytest.mark.parametrize('bits, packable', [((1, 2), True), ((2, 8), False),
                                            ((1, 1), False)])
def test_wage_networks_packed_by_their_bits(bits, packable):
    from qnn.packed import model
    from qnn.training import options as train_options
    args = train_options.parse_args(['--recipe', 'wage-seed'])
    args.weight_bits, args.activation_bits = bits
    if packable:
        model.check_packable(args)
        assert model.describe(args) == \
            'WAGE LeNet-5 seed, 1-bit weights, 2-bit activations'
    else:
        with pytest.raises(model.Unsupported) as e:
            model.check_packable(args)
        assert 'WAGE network' in str(e.value)
        assert '1-bit weights and 2-bit activations' in str(e.value)

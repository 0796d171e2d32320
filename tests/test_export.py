"""export.py on a tiny model trained here, and its errors."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy
import pytest


import export
from qnn.datasets import mnist
from qnn.packed import format as packed_format
from qnn.packed import forward as packed_forward
from qnn.packed import model
import train_mnist

from helpers import ROOT, chainer_predictions, run_export


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A 784-33-33-10 network after one epoch on 500 images."""
    out = str(tmp_path_factory.mktemp('trained'))
    assert train_mnist.main([
        '--epoch', '1', '--unit', '33', '--train-subset', '500',
        '--test-subset', '100', '--batchsize', '50', '--noplot',
        '--out', out]) == 0
    snapshot, = [os.path.join(out, name) for name in os.listdir(out)
                 if name.startswith('snapshot_iter_')]
    return snapshot


def test_export_equals_chainer_model(trained, tmp_path, capsys):
    output = str(tmp_path / 'tiny.bnn')
    assert export.main([trained, '-o', output]) == 0
    out = capsys.readouterr()[0]
    size = int(re.search(r'^file size: (\d+) bytes', out, re.M).group(1))
    assert size == os.path.getsize(output)
    network = packed_format.load(output)
    assert [layer.kind for layer in network.layers] == \
        ['planes', 'xnor', 'xnor']
    images, labels = mnist.load_raw()['test']
    images = images[:2000]
    logits = packed_forward.forward(network, images, 'numba')
    expected = chainer_predictions(trained, images)
    # the one source of difference, BLAS's rounding in the first layer,
    # would have to land within 1e-7 of a threshold and change the class
    numpy.testing.assert_array_equal(logits.argmax(axis=1), expected)
    assert (expected == labels[:2000]).mean() > 0.2  # trained: not chance


def assert_inference_accuracy(snapshot, output, images):
    """inference.py on the export of ``snapshot`` prints the accuracy of
    the Chainer model on the first ``images`` test images."""
    assert export.main([snapshot, '-o', output]) == 0
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'inference.py'), output,
         '--test-subset', str(images)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r'accuracy: (\d\.\d{4}) \(%d images, [\d.]+ s, '
                         r'\d+ images/s\)\n' % images, result.stdout)
    assert match, result.stdout
    test_images, labels = mnist.load_raw()['test']
    expected = (chainer_predictions(snapshot, test_images[:images]) ==
                labels[:images]).mean()
    assert float(match.group(1)) == pytest.approx(expected, abs=5e-5)


def test_inference_script_end_to_end(trained, tmp_path):
    assert_inference_accuracy(trained, str(tmp_path / 'tiny.bnn'), 300)


def copy_run(trained, tmp_path, config=True):
    directory = tmp_path / 'run'
    directory.mkdir()
    snapshot = str(directory / os.path.basename(trained))
    shutil.copy(trained, snapshot)
    if config:
        shutil.copy(os.path.join(os.path.dirname(trained), 'config.json'),
                    str(directory / 'config.json'))
    return snapshot


def assert_one_line(code, out, err, *words):
    assert code == 1
    assert err.count('\n') == 1 and err.startswith('export.py: error: ')
    assert 'Traceback' not in err
    for word in words:
        assert word in err, err


def test_snapshot_without_config(trained, tmp_path, capsys):
    snapshot = copy_run(trained, tmp_path, config=False)
    code, out, err = run_export(capsys, snapshot)
    assert_one_line(code, out, err, snapshot, 'no config.json')
    assert not os.path.exists(snapshot + '.bnn')


@pytest.mark.parametrize('option, value, word', [
    ('weight_bits', 5, '5-bit'), ('activation_bits', 8, '8-bit'),
    ('quantizer', 'log', 'log quantizer')])
def test_bits_the_format_cannot_hold_are_refused(trained, tmp_path, capsys,
                                                 option, value, word):
    snapshot = copy_run(trained, tmp_path)
    path = os.path.join(os.path.dirname(snapshot), 'config.json')
    with open(path) as f:
        config = json.load(f)
    config['weight_bits'] = 2
    config[option] = value
    with open(path, 'w') as f:
        json.dump(config, f)
    code, out, err = run_export(capsys, snapshot)
    assert_one_line(code, out, err, snapshot, word)
    assert sorted(os.listdir(str(tmp_path / 'run'))) == [
        'config.json', os.path.basename(snapshot)]  # nothing written


@pytest.mark.parametrize('bits', [(2, 2), (2, 8)])
def test_wage_networks_are_refused(trained, tmp_path, capsys, bits):
    snapshot = copy_run(trained, tmp_path)
    path = os.path.join(os.path.dirname(snapshot), 'config.json')
    with open(path) as f:
        config = json.load(f)
    config.update(arch='wage', recipe='wage-seed', optimizer='wage_sgd',
                  loss='sum_squared_error', lr_schedule='steps',
                  lr_steps='75:0.5', unit=1000, weight_bits=bits[0],
                  activation_bits=bits[1])
    with open(path, 'w') as f:
        json.dump(config, f)
    code, out, err = run_export(capsys, snapshot)
    assert_one_line(code, out, err, snapshot, 'WAGE network')
    assert sorted(os.listdir(str(tmp_path / 'run'))) == [
        'config.json', os.path.basename(snapshot)]  # nothing written


def test_source_records_the_stochastic_options(trained, tmp_path):
    network = export.export(trained, str(tmp_path / 'new.bnn'))
    assert network.source['config']['stochastic_activations'] is False
    assert network.source['config']['stochastic_weights'] is False
    # a config.json older than the two options has one `stochastic`
    snapshot = copy_run(trained, tmp_path)
    path = os.path.join(os.path.dirname(snapshot), 'config.json')
    with open(path) as f:
        config = json.load(f)
    del config['stochastic_activations'], config['stochastic_weights']
    config['stochastic'] = True
    with open(path, 'w') as f:
        json.dump(config, f)
    network = export.export(snapshot, str(tmp_path / 'old.bnn'))
    assert 'stochastic' not in network.source['config']
    assert network.source['config']['stochastic_activations'] is True
    assert network.source['config']['stochastic_weights'] is True


@pytest.mark.parametrize('change, word', [
    ({'layers': '2'}, '--layers'), ({'arch': 'rnn'}, '--arch'),
    ({'bn_eps': -1}, '--bn-eps'), ({'layers': 10 ** 8}, 'needs at least')])
def test_a_config_train_mnist_could_not_have_written(trained, tmp_path,
                                                     capsys, change, word):
    snapshot = copy_run(trained, tmp_path)
    path = os.path.join(os.path.dirname(snapshot), 'config.json')
    with open(path) as f:
        config = json.load(f)
    config.update(change)
    with open(path, 'w') as f:
        json.dump(config, f)
    code, out, err = run_export(capsys, snapshot)
    assert_one_line(code, out, err, snapshot, 'config.json', word)
    assert not os.path.exists(snapshot + '.bnn')


def test_unwritable_output(trained, tmp_path, capsys):
    output = str(tmp_path / 'no-such-directory' / 'x.bnn')
    code, out, err = run_export(capsys, trained, '-o', output)
    assert_one_line(code, out, err, output)


def test_not_a_snapshot(trained, tmp_path, capsys):
    snapshot = copy_run(trained, tmp_path)
    with open(snapshot, 'wb') as f:
        f.write(b'not an npz')
    code, out, err = run_export(capsys, snapshot)
    assert_one_line(code, out, err, snapshot)
    code, out, err = run_export(capsys, snapshot + '.missing')
    assert_one_line(code, out, err, 'no such file')


def test_snapshot_of_another_size(trained, tmp_path, capsys):
    snapshot = copy_run(trained, tmp_path)
    path = os.path.join(os.path.dirname(snapshot), 'config.json')
    with open(path) as f:
        config = json.load(f)
    config['unit'] = 34
    with open(path, 'w') as f:
        json.dump(config, f)
    code, out, err = run_export(capsys, snapshot)
    assert_one_line(code, out, err, 'has shape', '--unit 34')


def test_argument_error_exits_2(capsys):
    code, out, err = run_export(capsys)
    assert code == 2


def train_and_export(tmp_path, name, options):
    """Trains a 40-unit network for 10 steps with ``options``, exports it
    and checks its predictions on 1000 test images against Chainer's;
    returns the snapshot, the packed network, the images and its logits."""
    out = str(tmp_path / name)
    assert train_mnist.main([
        '--epoch', '1', '--unit', '40', '--train-subset', '500',
        '--test-subset', '100', '--batchsize', '50', '--noplot',
        '--out', out] + options) == 0
    snapshot = os.path.join(out, 'snapshot_iter_10')
    output = str(tmp_path / (name + '.bnn'))
    assert export.main([snapshot, '-o', output]) == 0
    network = packed_format.load(output)
    images = mnist.load_raw()['test'][0][:1000]
    logits = packed_forward.forward(network, images, 'numba')
    numpy.testing.assert_array_equal(logits.argmax(axis=1),
                                     chainer_predictions(snapshot, images))
    return snapshot, network, images, logits


def test_export_of_a_deeper_network_with_another_bn_eps(tmp_path, capsys):
    _, network, _, _ = train_and_export(
        tmp_path, 'deep', ['--layers', '3', '--bn-eps', '1e-4'])
    assert [layer.kind for layer in network.layers] == \
        ['planes', 'xnor', 'xnor', 'xnor']


def test_export_of_a_network_on_symmetric_pixels(tmp_path):
    # --input-range symmetric: the first layer sees 2 p / 255 - 1
    snapshot, network, images, logits = train_and_export(
        tmp_path, 'symmetric', ['--input-range', 'symmetric'])
    assert network.input['shift'] == -1.0
    assert network.input['scale'] == 127.5
    assert network.source['config']['input_range'] == 'symmetric'
    # read as [0, 1] pixels, the same weights predict something else
    options, _ = export.read_options(snapshot)
    options.input_range = 'unit'
    unit = model.fold(export.read_parameters(snapshot, options), options, {})
    assert (packed_forward.forward(unit, images, 'numba').argmax(axis=1) !=
            logits.argmax(axis=1)).any()


def test_shift_bn_mlp_predicts_as_its_chainer_model(tmp_path):
    # the hidden layers' shift-based BN folds into thresholds like the
    # standard one (its rounded scale is the affine map's)
    out = str(tmp_path / 'shift')
    assert train_mnist.main([
        '--epoch', '1', '--unit', '32', '--bn', 'shift', '--train-subset',
        '1000', '--test-subset', '100', '--batchsize', '50', '--noplot',
        '--out', out]) == 0
    snapshot = os.path.join(out, 'snapshot_iter_20')
    output = str(tmp_path / 'shift.bnn')
    assert export.main([snapshot, '-o', output]) == 0
    images = mnist.load_raw()['test'][0]
    logits = packed_forward.forward(packed_format.load(output), images,
                                    'numba')
    numpy.testing.assert_array_equal(logits.argmax(axis=1),
                                     chainer_predictions(snapshot, images))


@pytest.fixture(scope='module')
def wage_trained(tmp_path_factory):
    """WAGE's seed LeNet-5 (1-bit weights, 2-bit activations) after 3
    epochs on 3,000 images."""
    out = str(tmp_path_factory.mktemp('wage'))
    assert train_mnist.main([
        '--recipe', 'wage-seed', '--epoch', '3', '--train-subset', '3000',
        '--test-subset', '500', '--batchsize', '50', '--noplot',
        '--out', out]) == 0
    return os.path.join(out, 'snapshot_iter_180')


def test_wage_seed_export_predicts_as_chainer(wage_trained, tmp_path,
                                              capsys):
    output = str(tmp_path / 'wage.bnn')
    assert export.main([wage_trained, '-o', output]) == 0
    assert 'pixel conv 5x5 + pool 2x2' in capsys.readouterr()[0]
    network = packed_format.load(output)
    assert [layer.kind for layer in network.layers] == [
        'conv_pixels', 'conv_xnor', 'xnor', 'xnor', 'xnor']
    # pixels in [-1, 1] (the recipe's) quantize to three levels
    assert network.input['pixel_thresholds'] == [96, 160]
    images, labels = mnist.load_raw()['test']
    images = images[:2000]
    expected = chainer_predictions(wage_trained, images)
    for backend in ('numpy', 'numba'):
        logits = packed_forward.forward(network, images, backend)
        numpy.testing.assert_array_equal(logits.argmax(axis=1), expected)
    assert (expected == labels[:2000]).mean() > 0.2  # trained: not chance


def test_wage_seed_inference_script(wage_trained, tmp_path):
    assert_inference_accuracy(wage_trained, str(tmp_path / 'wage.bnn'), 500)


def test_wage_seed_c_export_is_refused(wage_trained, tmp_path, capsys):
    # the first refusal is the input's levels; without them, the
    # convolution's geometry
    from qnn.packed import c_source
    network = export.load(wage_trained)
    del network.input['pixel_thresholds']
    with pytest.raises(c_source.UnsupportedNetwork) as e:
        c_source.generate(network)
    assert 'a 5x5 convolution with padding 0' in str(e.value)
    code, out, err = run_export(capsys, wage_trained, '--format', 'c',
                                '-o', str(tmp_path / 'out'))
    assert_one_line(code, out, err, wage_trained, 'pixel_thresholds')
    assert not os.path.exists(str(tmp_path / 'out'))

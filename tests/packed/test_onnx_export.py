"""export.py --format onnx|qonnx: the ONNX graphs of the folded network
against the packed network's kernels, and their errors.

Needs onnx, onnxruntime and qonnx (``make onnx``); without them the tests
that use them skip, and fail instead when ``CI`` is ``true``.
"""
import importlib
import os
import subprocess
import sys

import numpy
import pytest

import export
from qnn.datasets import mnist
from qnn.packed import bits as packed_bits
from qnn.packed import format as packed_format
from qnn.packed import forward as packed_forward
import train_mnist

from helpers import ROOT, chainer_predictions, geometry_network, run_export


def require(name):
    """The module ``name``; skips without it, fails on CI."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        if os.environ.get('CI', '').lower() == 'true':
            pytest.fail('CI must run the ONNX export tests, but {} cannot '
                        'be imported ({}); `make test` installs '
                        'requirements-onnx.txt'.format(name, e),
                        pytrace=False)
        pytest.skip('{} is not installed ({}): run `make onnx`'.format(
            name, e))


@pytest.fixture(scope='module')
def test_images():
    return mnist.load_raw()['test'][0]


NETWORKS = {'layers2': ['--unit', '33', '--layers', '2'],
            'layers3': ['--unit', '33', '--layers', '3'],
            'cnn': ['--arch', 'cnn'],
            'bits2': ['--unit', '33', '--weight-bits', '2',
                      '--activation-bits', '2'],
            'shift_bn': ['--unit', '33', '--bn', 'shift']}


@pytest.fixture(scope='module', params=sorted(NETWORKS))
def trained(request, tmp_path_factory):
    """A 784-33-...-10 network of 2 or 3 hidden layers, or the small
    ConvNet, after one epoch on 500 images, and its folded network."""
    out = str(tmp_path_factory.mktemp('trained'))
    assert train_mnist.main(NETWORKS[request.param] + [
        '--epoch', '1', '--train-subset', '500', '--test-subset', '100',
        '--batchsize', '50', '--noplot', '--out', out]) == 0
    snapshot = os.path.join(out, 'snapshot_iter_10')
    return snapshot, export.load(snapshot)


def export_file(snapshot, tmp_path, dialect):
    """Runs ``export.py --format dialect`` and returns the loaded model."""
    onnx = require('onnx')
    output = str(tmp_path / ('net.' + dialect))
    assert export.main([snapshot, '--format', dialect, '-o', output]) == 0
    assert [name for name in os.listdir(str(tmp_path))] == [
        os.path.basename(output)]  # no temporary file left
    return onnx.load(output)


def test_onnx_logits_equal_the_packed_network(trained, tmp_path,
                                              test_images):
    onnx = require('onnx')
    onnxruntime = require('onnxruntime')
    snapshot, network = trained
    model = export_file(snapshot, tmp_path, 'onnx')
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ['pixels']
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=['CPUExecutionProvider'])
    logits, = session.run(None, {'pixels': test_images})
    expected = packed_forward.forward(network, test_images, 'numba')
    assert logits.dtype == numpy.float32
    # bit for bit on all 10,000 images: every sum is an exact integer and
    # the affine map runs in the same float32 order
    numpy.testing.assert_array_equal(logits, expected)
    numpy.testing.assert_array_equal(
        logits.argmax(axis=1), chainer_predictions(snapshot, test_images))


def random_network(rng, sizes=(784, 1000, 1000, 10)):
    """A packed network of the default widths with random weight bits,
    thresholds near the middle of each layer's sums, and an affine map of
    the scale a trained one has."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        kind = 'planes' if i == 0 else 'xnor'
        weights = packed_bits.pack_bits(rng.random((n_out, n_in)) < 0.5)
        name = 'l{}'.format(i + 1)
        if i < len(sizes) - 2:
            spread = (255 * 20 if i == 0 else 1) * int(n_in ** 0.5)
            layers.append(packed_format.Layer(
                name, kind, n_in, n_out, 'sign', weights,
                thresholds=rng.integers(-spread, spread + 1, n_out).astype(
                    numpy.int32)))
            continue
        affine = {'mean': rng.normal(0, 10, n_out),
                  'inv_std': rng.uniform(0.01, 0.1, n_out),
                  'gamma': rng.uniform(0.5, 2, n_out),
                  'beta': rng.normal(0, 1, n_out)}
        layers.append(packed_format.Layer(
            name, kind, n_in, n_out, 'affine', weights,
            **{k: v.astype(numpy.float32) for k, v in affine.items()}))
    return packed_format.PackedNetwork(
        layers, {'size': 784, 'pixel_bits': 8, 'scale': 255, 'shift': 0})


@pytest.mark.parametrize('level', ['ORT_DISABLE_ALL', 'ORT_ENABLE_ALL'])
def test_onnx_of_a_wide_network_is_exact(test_images, level):
    # sums up to 255 * 784 and 1000: large enough that a runtime fusing
    # the first output operation into the MatMul (a Gemm with bias) would
    # round differently
    require('onnx')
    onnxruntime = require('onnxruntime')
    from qnn.packed import onnx_export
    network = random_network(numpy.random.default_rng(0))
    images = test_images[:2000]
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = getattr(
        onnxruntime.GraphOptimizationLevel, level)
    session = onnxruntime.InferenceSession(
        onnx_export.to_onnx(network).SerializeToString(), options,
        providers=['CPUExecutionProvider'])
    logits, = session.run(None, {'pixels': images})
    expected = packed_forward.forward(network, images, 'numba')
    assert len(set(expected.argmax(axis=1))) > 1  # not a constant net
    numpy.testing.assert_array_equal(logits, expected)


def test_onnx_default_output_name(trained, tmp_path, capsys):
    require('onnx')
    snapshot, _ = trained
    copy = str(tmp_path / 'snapshot_iter_10')
    os.symlink(snapshot, copy)
    os.symlink(os.path.join(os.path.dirname(snapshot), 'config.json'),
               str(tmp_path / 'config.json'))
    assert export.main([copy, '--format', 'onnx']) == 0
    out = capsys.readouterr()[0]
    assert out.startswith('# {} -> {}.onnx\n'.format(copy, copy))
    size = os.path.getsize(copy + '.onnx')
    assert 'file size: {} bytes'.format(size) in out
    assert export.main([copy, '--format', 'qonnx']) == 0
    assert os.path.isfile(copy + '.qonnx.onnx')


def qonnx_model(snapshot, tmp_path):
    """The exported QONNX model after qonnx's cleanup and datatype
    inference, as FINN would first read it."""
    require('qonnx')
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model
    model = ModelWrapper(export_file(snapshot, tmp_path, 'qonnx'))
    model = cleanup_model(model)
    return model.transform(InferShapes()).transform(InferDataTypes())


def test_qonnx_graph_and_datatypes(trained, tmp_path):
    onnx = require('onnx')
    snapshot, network = trained
    for name in ('raw', 'clean'):
        (tmp_path / name).mkdir()
    raw = export_file(snapshot, tmp_path / 'raw', 'qonnx')
    onnx.checker.check_model(raw, full_check=True)
    model = qonnx_model(snapshot, tmp_path / 'clean')
    ops = [node.op_type for node in model.graph.node]
    hidden = len(network.layers) - 1
    convolutions = sum(layer.conv is not None for layer in network.layers)
    assert ops.count('MultiThreshold') == hidden
    assert ops.count('BipolarQuant') + ops.count('Quant') == hidden + 1
    assert ops.count('Conv') == convolutions
    assert ops.count('MatMul') == hidden + 1 - convolutions
    assert str(model.get_tensor_datatype(model.graph.input[0].name)) == \
        'UINT8'
    bipolar = network.layers[0].levels is None
    for node in model.graph.node:
        if node.op_type in ('MultiThreshold', 'BipolarQuant', 'Quant'):
            assert str(model.get_tensor_datatype(node.output[0])) == (
                'BIPOLAR' if bipolar else 'INT3'), node
        if node.op_type == 'MultiThreshold':
            thresholds = model.get_initializer(node.input[1])
            assert thresholds.shape[1] == (1 if bipolar else 3)
            assert thresholds.shape[0] in (33, 16, 32, 64, 512)


def test_qonnx_execution_equals_the_packed_network(trained, tmp_path,
                                                   test_images):
    snapshot, network = trained
    model = qonnx_model(snapshot, tmp_path)
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes
    images = test_images[:300]
    expected = packed_forward.forward(network, images, 'numba')
    # one image at the exported batch of 1, then 300 at once
    name, out = model.graph.input[0].name, model.graph.output[0].name
    one = execute_onnx(model, {name: images[:1].astype(numpy.float32)})
    numpy.testing.assert_array_equal(one[out], expected[:1])
    model = model.transform(ChangeBatchSize(len(images))).transform(
        InferShapes())
    logits = execute_onnx(model, {name: images.astype(numpy.float32)})[out]
    numpy.testing.assert_array_equal(logits, expected)


def network_with_kind(network, kind):
    layers = list(network.layers)
    old = layers[1]
    layers[1] = packed_format.Layer(old.name, kind, old.n_in, old.n_out,
                                    old.output, old.weights,
                                    thresholds=old.thresholds)
    return packed_format.PackedNetwork(layers, network.input,
                                       network.source)


@pytest.mark.parametrize('dialect', ['onnx', 'qonnx'])
def test_unknown_layer_kind_is_refused(trained, tmp_path, capsys,
                                       monkeypatch, dialect):
    require('onnx')
    from qnn.packed import onnx_export
    snapshot, network = trained
    strange = network_with_kind(network, 'conv3x3_pool')
    with pytest.raises(onnx_export.UnsupportedLayer) as e:
        onnx_export.DIALECTS[dialect](strange)
    assert "layer 2 ({}) is of kind 'conv3x3_pool'".format(
        network.layers[1].name) in str(e.value)
    monkeypatch.setattr(export, 'load', lambda snapshot: strange)
    output = str(tmp_path / 'strange.onnx')
    code, out, err = run_export(capsys, snapshot, '--format', dialect,
                                '-o', output)
    assert code == 1
    assert err.count('\n') == 1 and err.startswith('export.py: error: ')
    assert "of kind 'conv3x3_pool'" in err and snapshot in err
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize('dialect', ['onnx', 'qonnx'])
def test_missing_onnx_package(trained, tmp_path, capsys, monkeypatch,
                              dialect):
    snapshot, _ = trained
    # None in sys.modules makes `import onnx` raise ImportError
    monkeypatch.setitem(sys.modules, 'onnx', None)
    output = str(tmp_path / 'net.onnx')
    code, out, err = run_export(capsys, snapshot, '--format', dialect,
                                '-o', output)
    assert code == 1
    assert err.count('\n') == 1 and 'Traceback' not in err
    assert '--format {} needs the onnx package'.format(dialect) in err
    assert 'make onnx' in err
    assert os.listdir(str(tmp_path)) == []
    # the packed file needs no onnx
    assert export.main([snapshot, '-o', str(tmp_path / 'net.bnn')]) == 0


def test_unknown_format_exits_2(trained, capsys):
    code, _, err = run_export(capsys, trained[0], '--format', 'tflite')
    assert code == 2
    assert 'invalid choice' in err


def test_the_packed_path_does_not_import_onnx(trained, tmp_path):
    # export.py imports qnn.packed.onnx_export only for --format onnx|qonnx
    code = ('import sys, export, inference, train_mnist, net; '
            'from qnn.packed import folding, format, forward, summary; '
            'assert export.main(sys.argv[1:]) == 0; '
            'found = sorted(m for m in sys.modules if "onnx" in m); '
            'assert not found, found')
    root = ROOT
    result = subprocess.run(
        [sys.executable, '-c', code, trained[0], '-o',
         str(tmp_path / 'net.bnn')], cwd=root, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_onnx_of_kernel_sizes_and_pixel_levels_is_exact(test_images):
    # 5x5 convolutions, valid and padded, on the pixels' levels
    # (input.pixel_thresholds), random weights and thresholds
    require('onnx')
    onnxruntime = require('onnxruntime')
    from qnn.packed import onnx_export
    network = geometry_network(numpy.random.default_rng(3))
    images = test_images[:2000]
    session = onnxruntime.InferenceSession(
        onnx_export.to_onnx(network).SerializeToString(),
        providers=['CPUExecutionProvider'])
    logits, = session.run(None, {'pixels': images})
    expected = packed_forward.forward(network, images, 'numba')
    assert len(set(expected.argmax(axis=1))) > 1  # not a constant net
    numpy.testing.assert_array_equal(logits, expected)


@pytest.fixture(scope='module')
def wage_trained(tmp_path_factory):
    """WAGE's seed LeNet-5 after one epoch on 500 images."""
    out = str(tmp_path_factory.mktemp('wage'))
    assert train_mnist.main([
        '--recipe', 'wage-seed', '--epoch', '1', '--train-subset', '500',
        '--test-subset', '100', '--batchsize', '50', '--noplot',
        '--out', out]) == 0
    return os.path.join(out, 'snapshot_iter_10')


def test_onnx_of_wage_seed_predicts_as_chainer(wage_trained, tmp_path,
                                               test_images):
    onnx = require('onnx')
    onnxruntime = require('onnxruntime')
    model = export_file(wage_trained, tmp_path, 'onnx')
    onnx.checker.check_model(model, full_check=True)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=['CPUExecutionProvider'])
    logits, = session.run(None, {'pixels': test_images})
    network = export.load(wage_trained)
    numpy.testing.assert_array_equal(
        logits, packed_forward.forward(network, test_images, 'numba'))
    numpy.testing.assert_array_equal(
        logits.argmax(axis=1), chainer_predictions(wage_trained,
                                                   test_images))


def test_qonnx_of_wage_seed_equals_the_packed_network(wage_trained,
                                                      tmp_path, test_images):
    model = qonnx_model(wage_trained, tmp_path)
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes
    images = test_images[:300]
    expected = packed_forward.forward(export.load(wage_trained), images,
                                      'numba')
    model = model.transform(ChangeBatchSize(len(images))).transform(
        InferShapes())
    name, out = model.graph.input[0].name, model.graph.output[0].name
    logits = execute_onnx(model, {name: images.astype(numpy.float32)})[out]
    numpy.testing.assert_array_equal(logits, expected)

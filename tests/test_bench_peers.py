"""The benchmarks' own peers (bench/peers/): the float onnxruntime graph
against the Chainer model it is built from, what the PyTorch peers read
from the project, and bench/speed.py's use of them.

The float graph needs onnx and onnxruntime (``make onnx``, which ``make
test`` runs): without them its tests skip, and fail instead when ``CI`` is
``true``. The PyTorch layers' tests run in ``.venv-peer`` (``make
bench-peers``) and skip without it; nothing else here needs torch.
"""
import importlib
import json
import os
import subprocess
import sys

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

import export
import net
from qnn import datasets
from qnn.datasets import mnist
from qnn.functions.batch_normalization_sign import DEFAULT_EPS
from qnn.training import options as train_options
import train_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, 'bench')
PEERS = os.path.join(BENCH, 'peers')
PEER_PYTHON = os.path.join(ROOT, '.venv-peer', 'bin', 'python')
# appended, not prepended: bench/inference.py must not hide inference.py
sys.path.append(BENCH)
sys.path.append(PEERS)

from peers import onnxruntime_float  # NOQA: E402
import project_source  # NOQA: E402
import reference  # NOQA: E402
import speed  # NOQA: E402


def require(name):
    """The module ``name``; skips without it, fails on CI."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        if os.environ.get('CI', '').lower() == 'true':
            pytest.fail('CI must run the float peer\'s tests, but {} cannot '
                        'be imported ({}); `make test` installs '
                        'requirements-onnx.txt'.format(name, e),
                        pytrace=False)
        pytest.skip('{} is not installed ({}): run `make onnx`'.format(
            name, e))


NETWORKS = {
    'mlp': ['--unit', '33', '--layers', '2'],
    'mlp_k_bits': ['--unit', '33', '--weight-bits', '2',
                   '--activation-bits', '2'],
    'mlp_shift_bn_symmetric': ['--unit', '33', '--layers', '3', '--bn',
                               'shift', '--input-range', 'symmetric'],
    'cnn': ['--arch', 'cnn'],
}


@pytest.fixture(scope='module', params=sorted(NETWORKS))
def snapshot(request, tmp_path_factory):
    """A small network after 10 steps on 500 images (one epoch)."""
    out = str(tmp_path_factory.mktemp(request.param))
    assert train_mnist.main(NETWORKS[request.param] + [
        '--epoch', '1', '--train-subset', '500', '--test-subset', '100',
        '--batchsize', '50', '--noplot', '--out', out]) == 0
    return os.path.join(out, 'snapshot_iter_10')


@pytest.fixture(scope='module')
def test_images():
    return mnist.load_raw()['test'][0][:1000]


def chainer_logits(snapshot, images):
    options, _ = export.read_options(snapshot)
    predictor = reference.chainer_predictor(snapshot, options)
    pixels = datasets.INPUT_RANGES[options.input_range]
    x = images.astype(numpy.float32) * numpy.float32(pixels['scale'] / 255.)
    x += numpy.float32(pixels['shift'])
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        return predictor(x).array


def test_float_graph_computes_the_chainer_model(snapshot, test_images):
    require('onnx')
    require('onnxruntime')
    model, _ = onnxruntime_float.load(snapshot)
    session = onnxruntime_float.session(model, 1)
    logits = onnxruntime_float.run(
        session, onnxruntime_float.unit_pixels(test_images), 250)
    expected = chainer_logits(snapshot, test_images)
    assert logits.shape == expected.shape == (len(test_images), 10)
    # float arithmetic in another order: a unit within rounding of its
    # sign change can flip, so most logits agree closely, not all
    close = numpy.abs(logits - expected).max(axis=1) < 1e-3
    assert close.mean() >= 0.98
    differ = (logits.argmax(axis=1) != expected.argmax(axis=1)).sum()
    assert differ <= len(test_images) // 100


def test_float_graph_is_plain(snapshot):
    onnx = require('onnx')
    model, options = onnxruntime_float.load(snapshot)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ['pixels']
    assert model.graph.input[0].type.tensor_type.elem_type == \
        onnx.TensorProto.FLOAT
    ops = {node.op_type for node in model.graph.node}
    assert ops <= {'MatMul', 'Conv', 'MaxPool', 'BatchNormalization', 'Mul',
                   'Add', 'Where', 'GreaterOrEqual', 'Clip', 'Floor',
                   'Reshape', 'Flatten'}
    weights = {init.name: onnx.numpy_helper.to_array(init)
               for init in model.graph.initializer}
    for node in model.graph.node:  # a multiply-add: mean 0, variance 1
        if node.op_type == 'BatchNormalization':
            assert not weights[node.input[3]].any()
            assert (weights[node.input[4]] == 1).all()
            assert onnx.helper.get_node_attr_value(node, 'epsilon') == 0
    products = [node for node in model.graph.node
                if node.op_type in ('MatMul', 'Conv')]
    levels = 2 ** options.weight_bits
    for node in products:
        values = numpy.unique(weights[node.input[1]])
        assert len(values) <= levels and numpy.abs(values).max() <= 1
        if levels == 2:
            assert set(values) <= {-1.0, 1.0}
    layers = options.layers + 1 if options.arch == 'mlp' else len(
        [key for key in export.read_parameters(snapshot, options)
         if key.endswith('/W')])
    assert len(products) == layers


def test_float_graph_of_the_convnet_pools_with_ceil_mode():
    # 28 -> 14 -> 7 -> 4: Chainer's cover_all on the odd size only
    onnx = require('onnx')
    model = net.BinaryConvNet(10, 'small')
    params = dict(convnet_arrays(model))
    options = train_options.parse_args(['--arch', 'cnn'])
    graph = onnxruntime_float.build(params, options)
    ceil = [onnx.helper.get_node_attr_value(node, 'ceil_mode')
            for node in graph.graph.node if node.op_type == 'MaxPool']
    assert ceil == [0, 0, 1]


def convnet_arrays(model):
    """``(name, array)`` of a fresh model's parameters and BN statistics,
    named as in a snapshot's predictor (``conv1_1/W``, ``bn1_1/avg_mean``)."""
    for name, param in model.namedparams():
        yield name.lstrip('/'), param.array
    for name, link in model.namedlinks(skipself=True):
        for key in ('avg_mean', 'avg_var'):
            if hasattr(link, key):
                yield '{}/{}'.format(name.lstrip('/'), key), getattr(link, key)


def test_log_quantizer_activations_are_refused(snapshot):
    options, _ = export.read_options(snapshot)
    params = export.read_parameters(snapshot, options)
    options.activation_bits, options.quantizer = 2, 'log'
    with pytest.raises(onnxruntime_float.GraphError, match='log quantizer'):
        onnxruntime_float.build(params, options)


def test_missing_array_is_named(snapshot):
    options, _ = export.read_options(snapshot)
    params = export.read_parameters(snapshot, options)
    key = sorted(k for k in params if k.endswith('/W'))[-1]
    del params[key]
    with pytest.raises(onnxruntime_float.GraphError, match=key):
        onnxruntime_float.build(params, options)


def run_float_peer(*args):
    return subprocess.run(
        [sys.executable, os.path.join(PEERS, 'onnxruntime_float.py')] +
        list(args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=600)


def test_float_peer_refuses_to_replace_a_file(snapshot, tmp_path):
    require('onnx')
    require('onnxruntime')
    existing = tmp_path / 'graph.onnx'
    existing.write_text('keep me')
    result = run_float_peer(snapshot, '-o', str(existing), '--rounds', '1')
    assert result.returncode == 1
    assert result.stderr.count('\n') == 1 and 'exists' in result.stderr
    assert existing.read_text() == 'keep me'


def test_float_peer_without_config_exits_with_one_line(tmp_path):
    path = tmp_path / 'snapshot_iter_1'
    path.write_bytes(b'')
    result = run_float_peer(str(path))
    assert result.returncode == 1
    assert result.stderr.count('\n') == 1 and 'config.json' in result.stderr


def test_peers_read_the_project_definitions():
    assert project_source.architectures() == net.ARCHITECTURES
    assert project_source.bn_eps() == DEFAULT_EPS
    with pytest.raises(LookupError):
        project_source.project_value('net.py', 'NO_SUCH_NAME')


def test_peers_read_mnist_as_the_project_does():
    theirs = project_source.read_mnist()
    ours = mnist.load_raw()
    for split in ('train', 'test'):
        for a, b in zip(theirs[split], ours[split]):
            numpy.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('script', ['torch_mlp.py', 'torch_convnet_step.py',
                                    'onnxruntime_float.py'])
def test_peer_answers_help_without_torch(script):
    result = subprocess.run([sys.executable, os.path.join(PEERS, script),
                             '--help'], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'usage:' in result.stdout


def test_speed_runs_the_peers_of_the_repository():
    for path in (speed.PEER_SCRIPT, speed.PEER_CNN_SCRIPT):
        assert os.path.isfile(path)
        assert os.path.commonpath([path, ROOT]) == ROOT


def test_speed_without_the_peer_environment(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        speed.main(['--peer-venv', str(tmp_path / 'none'),
                    '--out', str(tmp_path / 'out')])
    assert 'make bench-peers' in str(e.value.code)


def test_blas_floor_counts_an_epochs_products():
    # forward and weight gradient of 3 layers, input gradient of 2
    shapes = speed.epoch_products((784, 1000, 1000, 10), 100)
    assert len(shapes) == 8
    assert all(a[1] == b[0] for a, b in shapes)
    flops = sum(2 * a[0] * a[1] * b[1] for a, b in shapes)
    per_layer = 2 * 100 * numpy.array([784 * 1000, 1000 * 1000, 1000 * 10])
    assert flops == 3 * per_layer.sum() - per_layer[0]


def peer_python_or_skip():
    if not os.path.isfile(PEER_PYTHON):
        pytest.skip('no .venv-peer with torch: run `make bench-peers`')
    return PEER_PYTHON


def run_in_peer_venv(code):
    result = subprocess.run(
        [peer_python_or_skip(), '-c', code], cwd=PEERS,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize('size', sorted(net.ARCHITECTURES))
def test_torch_convnet_has_the_chainer_layers(size):
    arch = net.ARCHITECTURES[size]
    shapes = run_in_peer_venv(
        'import json, project_source, torch_convnet_step as m\n'
        'arch = project_source.architectures()[{!r}]\n'
        'net = m.build_convnet(arch, tuple(arch["in_shape"]), 10)\n'
        'print(json.dumps(sorted(list(p.shape) for p in net.parameters())))'
        .format(size))
    model = net.BinaryConvNet(10, size)
    expected = sorted(list(p.shape) for p in model.params())
    assert shapes == expected


def test_torch_sign_and_its_gradients():
    found = run_in_peer_venv(
        'import json, torch, binary_torch as b\n'
        'x = torch.tensor([-2., -1., -0.5, 0., 0.5, 1., 2.], '
        'requires_grad=True)\n'
        'y = b.SignActivation.apply(x); y.sum().backward()\n'
        'w = torch.tensor([-0.3, 0., 0.7], requires_grad=True)\n'
        'v = b.SignWeight.apply(w); (v * torch.tensor([1., 2., 3.])).sum()'
        '.backward()\n'
        'print(json.dumps([y.tolist(), x.grad.tolist(), v.tolist(), '
        'w.grad.tolist()]))')
    assert found == [[-1, -1, -1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 0],
                     [-1, 1, 1], [1, 2, 3]]

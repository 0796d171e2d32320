import json
import os
import subprocess
import sys

import numpy
import pytest

import mnist_data
import train_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'train_mnist.py')
COLUMNS = ['epoch', 'main/loss', 'validation/main/loss', 'main/accuracy',
           'validation/main/accuracy', 'elapsed_time']
SMALL = ['--unit', '32', '--train-subset', '500', '--test-subset', '200',
         '--batchsize', '50']


def run_script(*args):
    return subprocess.run(
        [sys.executable, SCRIPT] + list(args), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=300)


def read_log(out):
    with open(os.path.join(str(out), 'log')) as f:
        return json.load(f)


def test_end_to_end(tmp_path):
    out = tmp_path / 'result'
    proc = run_script('--epoch', '2', '--out', str(out), '--lr', '0.01',
                      *SMALL)
    assert proc.returncode == 0, proc.stderr
    assert 'Traceback' not in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:4] == ['Device: @numpy', '# unit: 32',
                         '# Minibatch-size: 50', '# epoch: 2']
    header = next(line for line in lines if line.startswith('epoch'))
    assert header.split() == COLUMNS
    assert '\033' not in proc.stdout  # plain text when not on a terminal
    rows = [line.split() for line in lines[lines.index(header) + 1:]]
    assert [row[0] for row in rows] == ['0', '1', '2']
    assert all(len(row) == 6 for row in rows[1:])
    log = read_log(out)
    # epoch 0: evaluation before training, as in Chainer's example
    assert [entry['epoch'] for entry in log] == [0, 1, 2]
    for key in COLUMNS:
        assert key in log[-1]
    # the two epochs learned something on 500 images
    assert log[-1]['validation/main/accuracy'] > 0.5
    for name in ('loss.png', 'accuracy.png', 'cg.dot', 'snapshot_iter_20'):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name


def test_resume_continues(tmp_path):
    out = tmp_path / 'result'
    assert train_mnist.main(['--epoch', '1', '--out', str(out), '--noplot',
                             '--frequency', '1'] + SMALL) == 0
    snapshot = out / 'snapshot_iter_10'
    assert snapshot.is_file()
    assert train_mnist.main(['--epoch', '2', '--out', str(out), '--noplot',
                             '--resume', str(snapshot)] + SMALL) == 0
    log = read_log(out)
    assert [entry['epoch'] for entry in log] == [0, 1, 2]
    assert log[-1]['iteration'] == 20


def test_same_seed_same_log(tmp_path):
    logs = []
    for name in ('a', 'b', 'c'):
        seed = '1' if name == 'c' else '0'
        out = tmp_path / name
        assert train_mnist.main(['--epoch', '1', '--out', str(out),
                                 '--noplot', '--seed', seed] + SMALL) == 0
        logs.append([{k: v for k, v in entry.items()
                      if k != 'elapsed_time'} for entry in read_log(out)])
    assert logs[0] == logs[1]
    assert logs[0] != logs[2]


def test_learning_rate_schedule(tmp_path, capsys):
    # exponential: from --lr in the first epoch to --lr-final in the last
    out = tmp_path / 'exp'
    assert train_mnist.main(['--epoch', '3', '--out', str(out), '--noplot',
                             '--lr', '0.01', '--lr-final', '0.0001'] +
                            SMALL) == 0
    alphas = [entry['alpha'] for entry in read_log(out)[1:]]
    assert alphas == pytest.approx([0.01, 0.001, 0.0001])
    out = tmp_path / 'const'
    assert train_mnist.main(['--epoch', '2', '--out', str(out), '--noplot',
                             '--lr-schedule', 'constant'] + SMALL) == 0
    alphas = [entry['alpha'] for entry in read_log(out)[1:]]
    default = train_mnist.parse_args([]).lr
    assert alphas == [default, default]
    assert 'Adam alpha: {:g} (constant)'.format(default) in \
        capsys.readouterr().out


def test_divergence_stops_the_run(tmp_path, monkeypatch, capsys):
    real_get_mnist = mnist_data.get_mnist

    def poisoned(**kwargs):
        train, test = real_get_mnist(**kwargs)
        train._datasets[0][123, :] = numpy.nan
        return train, test

    monkeypatch.setattr(mnist_data, 'get_mnist', poisoned)
    out = tmp_path / 'result'
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--epoch', '3', '--out', str(out), '--noplot']
                         + SMALL)
    assert e.value.code == train_mnist.EXIT_DIVERGED
    err = capsys.readouterr().err
    assert 'training diverged: main/loss is nan at epoch 1' in err
    # no epoch finished on garbage
    assert not (out / 'log').exists() or [
        entry['epoch'] for entry in read_log(out)] == [0]


def test_quantization_options_end_to_end(tmp_path, capsys):
    out = tmp_path / 'result'
    options = ['--weight-bits', '2', '--activation-bits', '4',
               '--quantizer', 'log', '--stochastic', '--gradient-bits', '2',
               '--error-bits', '8']
    assert train_mnist.main(['--epoch', '1', '--out', str(out), '--noplot',
                             '--lr', '0.01'] + options + SMALL) == 0
    captured = capsys.readouterr()
    assert ('# bits: weights 2, activations 4, gradients 2, errors 8 '
            '(log, stochastic)') in captured.out.splitlines()
    # 2-bit gradients for 2-bit weights: warned, not refused
    assert captured.err.startswith(
        'train_mnist.py: warning: --gradient-bits 2 is not larger than '
        '--weight-bits 2')
    with open(str(out / 'config.json')) as f:
        config = json.load(f)
    assert (config['weight_bits'], config['activation_bits'],
            config['quantizer'], config['stochastic'],
            config['gradient_bits'], config['error_bits']) == (
                2, 4, 'log', True, 2, 8)
    assert config['versions']['chainer'] == '7.8.1'
    assert read_log(out)[-1]['validation/main/accuracy'] > 0.3
    # no temporary file left next to it
    assert not [p for p in os.listdir(str(out)) if p.startswith('.config')]


def test_full_precision_differs_from_binarized(tmp_path):
    logs = []
    for bits in ('1', '32'):
        out = tmp_path / bits
        assert train_mnist.main(
            ['--epoch', '1', '--out', str(out), '--noplot',
             '--weight-bits', bits, '--activation-bits', bits] + SMALL) == 0
        logs.append(read_log(out)[-1]['main/loss'])
    assert logs[0] != logs[1]


@pytest.mark.parametrize('args, message', [
    (['--batchsize', '0'], 'must be a positive integer, got 0'),
    (['--batchsize', '-5'], 'must be a positive integer, got -5'),
    (['--batchsize', '1.5'], "'1.5' is not an integer"),
    (['--epoch', '0'], 'must be a positive integer'),
    (['--epoch', 'ten'], "'ten' is not an integer"),
    (['--unit', '0'], 'must be a positive integer'),
    (['--frequency', '0'], 'must be a positive integer'),
    (['--frequency', 'x'], "'x' is not an integer"),
    (['--lr', '-1'], 'must be a positive number'),
    (['--lr', 'nan'], 'must be a positive number'),
    (['--gpu', 'x'], "invalid int value: 'x'"),
    (['--seed', '-1'], 'must be between 0 and 2**32 - 1, got -1'),
    (['--lr-schedule', 'cosine'], 'invalid choice'),
    (['--resume', '/nonexistent/snapshot'], 'no such file'),
    (['--weight-bits', '0'], 'must be between 1 and 32 bits'),
    (['--weight-bits', '-2'], 'must be between 1 and 32 bits'),
    (['--activation-bits', '33'], 'must be between 1 and 32 bits'),
    (['--activation-bits', '2.5'], "'2.5' is not an integer"),
    (['--gradient-bits', '1'], 'must be between 2 and 32 bits'),
    (['--error-bits', 'six'], "'six' is not an integer"),
    (['--quantizer', 'ternary'], 'invalid choice'),
])
def test_bad_arguments_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        train_mnist.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith('usage:')


def test_gpu_without_cuda_is_one_line():
    from chainer.backends import cuda
    if cuda.available:
        pytest.skip('CuPy is installed here')
    proc = run_script('--gpu=0', '--epoch', '1')
    assert proc.returncode == 1
    assert proc.stdout == ''
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert 'CUDA through CuPy' in lines[0]
    try:
        import cupy  # NOQA
    except ImportError:
        assert 'cupy is not installed: run `make gpu`' in lines[0]
    else:  # installed, but the CUDA libraries are missing
        assert 'CuPy is installed but cannot load CUDA' in lines[0]


def test_bad_device_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--device', 'tpu:7'])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid device specifier 'tpu:7'" in err[0]


def test_output_directory_is_a_file(tmp_path, capsys):
    out = tmp_path / 'result'
    out.write_text('not a directory')
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--out', str(out)] + SMALL)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'cannot write to the output directory' in err[0]
    assert out.read_text() == 'not a directory'


@pytest.mark.parametrize('content, shape_change', [
    (b'this is not a snapshot', False),
    (None, True),  # a real snapshot of a model with other --unit
])
def test_bad_snapshot_is_one_line(tmp_path, capsys, content, shape_change):
    snapshot = tmp_path / 'snapshot'
    if shape_change:
        other = tmp_path / 'other'
        assert train_mnist.main(['--epoch', '1', '--out', str(other),
                                 '--noplot'] + SMALL) == 0
        snapshot = other / 'snapshot_iter_10'
        args = SMALL + ['--unit', '16']
    else:
        snapshot.write_bytes(content)
        args = SMALL
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--resume', str(snapshot), '--noplot', '--out',
                          str(tmp_path / 'result')] + args)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'cannot resume from' in err[0], err
    if shape_change:
        assert 'shape' in err[0]


def test_missing_data_dir_is_one_line(tmp_path):
    proc = run_script('--data-dir', str(tmp_path / 'nowhere'), '--epoch',
                      '1')
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert 'train-images-idx3-ubyte' in lines[0]
    assert str(tmp_path / 'nowhere') in lines[0]

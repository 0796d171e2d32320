import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy
import pytest

from qnn.datasets import mnist
from qnn.iterators import array_iterator
from qnn.training.extensions import snapshots
from qnn.training import options as train_options
from qnn.training import splits
from qnn.training import output_lock
from qnn.training import run_output
from qnn.utils import errors
import train_mnist
import weight_clip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'train_mnist.py')
COLUMNS = ['epoch', 'main/loss', 'validation/main/loss', 'main/accuracy',
           'validation/main/accuracy', 'elapsed_time']
SMALL = ['--unit', '32', '--train-subset', '500', '--test-subset', '200',
         '--batchsize', '50']


def run_files(directory):
    """The files of a run, without the output lock
    (qnn/training/output_lock.py)."""
    return sorted(name for name in os.listdir(str(directory))
                  if not name.startswith('.lock'))


def run_script(*args):
    return subprocess.run(
        [sys.executable, SCRIPT] + list(args), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=300)


def read_log(out):
    with open(os.path.join(str(out), 'log')) as f:
        return json.load(f)


def log_values(out):
    """The log without the wall-clock times."""
    return [{key: value for key, value in entry.items()
             if key != 'elapsed_time'} for entry in read_log(out)]


def one_error_line(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith('train_mnist.py: error: ')
    return lines[0]


# train_mnist.py in a child process, each update slowed down by argv[1]
# seconds so that a test can send it signals during training
SLOW_CHILD = textwrap.dedent("""
    import sys, time
    from qnn.backends import chainer_compat
    from chainer.training import updaters
    import train_mnist
    update_core = updaters.StandardUpdater.update_core
    def slow_update_core(self):
        time.sleep(float(sys.argv[1]))
        update_core(self)
    updaters.StandardUpdater.update_core = slow_update_core
    sys.exit(train_mnist.main(sys.argv[2:]))
""")


def start_slow_child(seconds_per_update, *args):
    return subprocess.Popen(
        [sys.executable, '-c', SLOW_CHILD, str(seconds_per_update)] +
        list(args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True)


def read_until_row(proc, epoch):
    """Reads the child's stdout up to the report row of ``epoch``."""
    for line in proc.stdout:
        if line.split()[:1] == [str(epoch)]:
            return
    raise AssertionError('no row for epoch {}: {}'.format(
        epoch, proc.communicate()))


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
    for name in ('loss.png', 'accuracy.png', 'cg.dot', 'snapshot_iter_10',
                 'snapshot_iter_20'):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name


def test_resume_repeats_the_uninterrupted_run(tmp_path, capsys):
    # 2 epochs, then 2 more from the snapshot, log the same values as 4 in
    # one go (a constant step size: the exponential schedule depends on
    # --epoch, so its first 2 epochs of 4 differ from a run of 2)
    args = ['--noplot', '--lr-schedule', 'constant', '--lr', '0.01'] + SMALL
    whole = tmp_path / 'whole'
    assert train_mnist.main(['--epoch', '4', '--out', str(whole)] + args) \
        == 0
    parts = tmp_path / 'parts'
    assert train_mnist.main(['--epoch', '2', '--out', str(parts)] + args) \
        == 0
    assert run_files(parts) == [
        'cg.dot', 'config.json', 'log', 'snapshot_iter_10',
        'snapshot_iter_20']
    capsys.readouterr()
    assert train_mnist.main(['--epoch', '4', '--out', str(parts),
                             '--resume', 'auto'] + args) == 0
    assert '# resume: {} (iteration 20, epoch 2)'.format(
        parts / 'snapshot_iter_20') in capsys.readouterr().out
    assert [entry['epoch'] for entry in read_log(parts)] == [0, 1, 2, 3, 4]
    assert log_values(parts) == log_values(whole)
    # the 3 newest snapshots are kept
    assert sorted(name for name in os.listdir(str(parts))
                  if name.startswith('snapshot')) == [
        'snapshot_iter_20', 'snapshot_iter_30', 'snapshot_iter_40']


def test_snapshot_frequency_and_keep(tmp_path):
    out = tmp_path / 'result'
    assert train_mnist.main(['--epoch', '3', '--out', str(out), '--noplot',
                             '--frequency', '2', '--snapshot-keep', '5'] +
                            SMALL) == 0
    # every 2nd epoch, and the last
    assert sorted(name for name in os.listdir(str(out))
                  if name.startswith('snapshot')) == [
        'snapshot_iter_20', 'snapshot_iter_30']
    out = tmp_path / 'keep1'
    assert train_mnist.main(['--epoch', '3', '--out', str(out), '--noplot',
                             '--snapshot-keep', '1', '--frequency', '-1'] +
                            SMALL) == 0
    assert sorted(name for name in os.listdir(str(out))
                  if name.startswith('snapshot')) == ['snapshot_iter_30']


def test_resume_auto_without_snapshot_starts_afresh(tmp_path, capsys):
    out = tmp_path / 'result'
    assert train_mnist.main(['--epoch', '1', '--out', str(out), '--noplot',
                             '--resume', 'auto'] + SMALL) == 0
    assert '# resume: no snapshot in {}, starting from the beginning'.format(
        out) in capsys.readouterr().out
    assert [entry['epoch'] for entry in read_log(out)] == [0, 1]


def test_resume_auto_skips_a_damaged_snapshot(tmp_path, capsys):
    out = tmp_path / 'result'
    args = ['--out', str(out), '--noplot'] + SMALL
    assert train_mnist.main(['--epoch', '2'] + args) == 0
    newest = out / 'snapshot_iter_20'
    newest.write_bytes(newest.read_bytes()[:1000])
    capsys.readouterr()
    assert train_mnist.main(['--epoch', '2', '--resume', 'auto'] + args) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith('train_mnist.py: skipping {}: it is '
                                   'truncated'.format(newest))
    assert '# resume: {} (iteration 10'.format(out / 'snapshot_iter_10') \
        in captured.out


SIGNAL_STATUS = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]


@pytest.mark.parametrize('signum, status', SIGNAL_STATUS)
def test_signal_then_resume(tmp_path, signum, status):
    args = ['--epoch', '3', '--noplot'] + SMALL
    out = tmp_path / 'result'
    proc = start_slow_child(0.03, '--out', str(out), *args)
    read_until_row(proc, 1)
    time.sleep(0.1)  # a few updates into epoch 2
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr
    assert 'Traceback' not in stderr
    name = signal.Signals(signum).name
    note, last = stderr.strip().splitlines()
    assert note.startswith(name + ' received: finishing this iteration')
    snapshot = snapshots.find_snapshots(str(out))[0]
    assert last.startswith('train_mnist.py: interrupted by {} at '
                           'iteration '.format(name))
    assert last.endswith('wrote {0}; to continue, run the same command with '
                         '--resume {0} (or --resume auto)'.format(snapshot))
    assert 10 <= int(snapshot.rsplit('_', 1)[1]) < 30
    assert train_mnist.main(['--out', str(out), '--resume', snapshot] +
                            args) == 0
    whole = tmp_path / 'whole'
    assert train_mnist.main(['--out', str(whole)] + args) == 0
    assert log_values(out) == log_values(whole)


def test_second_sigint_stops_at_once(tmp_path):
    out = tmp_path / 'result'
    proc = start_slow_child(2, '--epoch', '3', '--out', str(out),
                            '--noplot', *SMALL)
    read_until_row(proc, 0)  # the evaluation before training
    time.sleep(0.5)  # in the first update
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    started = time.time()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert time.time() - started < 1.5  # the update took 2 s
    assert proc.returncode == -signal.SIGINT  # the system's action
    assert stderr.strip().splitlines() == [
        'SIGINT received: finishing this iteration, then writing a snapshot '
        '(press Ctrl-C again to stop at once)']
    assert not [name for name in os.listdir(str(out)) if 'snapshot' in name]


# the child stalls in the middle of writing its second snapshot
STALLING_CHILD = textwrap.dedent("""
    import sys, time
    import train_mnist
    from qnn.training.extensions import snapshots
    save_npz = snapshots.save_npz
    calls = []

    class Stalling(object):
        def __init__(self, f):
            self.f, self.written = f, 0
        def write(self, data):
            self.f.write(data)
            self.written += len(data)
            if self.written > 50000:
                self.f.flush()
                print('STALLED', flush=True)
                time.sleep(600)
            return len(data)
        def __getattr__(self, name):
            return getattr(self.f, name)

    def stalling_save_npz(f, obj, compression=True):
        calls.append(f)
        save_npz(f if len(calls) == 1 else Stalling(f), obj, compression)

    snapshots.save_npz = stalling_save_npz
    sys.exit(train_mnist.main(sys.argv[1:]))
""")


def test_sigkill_while_writing_a_snapshot_then_resume(tmp_path):
    args = ['--epoch', '3', '--noplot'] + SMALL
    out = tmp_path / 'result'
    proc = subprocess.Popen(
        [sys.executable, '-c', STALLING_CHILD, '--out', str(out)] + args,
        cwd=ROOT, stdout=subprocess.PIPE, universal_newlines=True)
    for line in proc.stdout:
        if line.strip() == 'STALLED':
            break
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    names = run_files(out)
    # the half-written second snapshot is only a hidden temporary file
    assert names[0].startswith('.snapshot_iter_20.')
    assert names[0].endswith('.tmp')
    assert os.path.getsize(str(out / names[0])) > 50000
    assert names[1:] == ['cg.dot', 'config.json', 'log', 'snapshot_iter_10']
    assert train_mnist.main(['--out', str(out), '--resume', 'auto'] +
                            args) == 0
    assert run_files(out) == [
        'cg.dot', 'config.json', 'log', 'snapshot_iter_10',
        'snapshot_iter_20', 'snapshot_iter_30']
    whole = tmp_path / 'whole'
    assert train_mnist.main(['--out', str(whole)] + args) == 0
    assert log_values(out) == log_values(whole)


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
    default = train_options.parse_args([]).lr
    assert alphas == [default, default]
    assert 'Adam alpha: {:g} (constant)'.format(default) in \
        capsys.readouterr().out
    # halving: --lr for the first N epochs, then half of it for N, ...
    out = tmp_path / 'halving'
    assert train_mnist.main(['--epoch', '5', '--out', str(out), '--noplot',
                             '--lr', '0.01', '--lr-schedule', 'halving',
                             '--lr-halving-epochs', '2'] + SMALL) == 0
    alphas = [entry['alpha'] for entry in read_log(out)[1:]]
    assert alphas == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])
    assert 'Adam alpha: 0.01, halved every 2 epochs' in \
        capsys.readouterr().out


def test_divergence_stops_the_run(tmp_path, monkeypatch, capsys):
    real_get_mnist = mnist.get_mnist

    def poisoned(**kwargs):
        train, test = real_get_mnist(**kwargs)
        train._datasets[0][123, :] = numpy.nan
        return train, test

    monkeypatch.setattr(mnist, 'get_mnist', poisoned)
    out = tmp_path / 'result'
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--epoch', '3', '--out', str(out), '--noplot']
                         + SMALL)
    assert e.value.code == errors.EXIT_DIVERGED
    err = one_error_line(capsys)
    assert 'training diverged: main/loss is nan at epoch 1' in err
    assert err.endswith('stopped without saving anything of it; there is '
                        'no snapshot of this run (a lower --lr may help)')
    # no epoch finished on garbage
    assert not (out / 'log').exists() or [
        entry['epoch'] for entry in read_log(out)] == [0]
    assert not [name for name in os.listdir(str(out)) if 'snapshot' in name]


def test_huge_step_size_diverges(tmp_path, capsys):
    out = tmp_path / 'result'
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--epoch', '2', '--out', str(out), '--noplot',
                          '--lr', '1e30', '--lr-schedule', 'constant'] +
                         SMALL)
    assert e.value.code == errors.EXIT_DIVERGED
    # one line: NumPy's overflow warnings are not shown on top
    err = one_error_line(capsys)
    assert 'training diverged: parameter predictor/' in err
    assert 'in the update at epoch 1, iteration' in err


def poison_after_update(monkeypatch, iteration):
    """Makes the weight clip hook put a NaN into a BN shift after the given
    update: the loss of that iteration is still finite."""
    real_call = weight_clip.WeightClip.__call__

    def poisoning_call(self, optimizer):
        real_call(self, optimizer)
        if optimizer.t == iteration:
            optimizer.target.predictor.b2.beta.array[0] = numpy.nan

    monkeypatch.setattr(weight_clip.WeightClip, '__call__', poisoning_call)


def test_divergence_keeps_the_last_good_snapshot(tmp_path, monkeypatch,
                                                  capsys):
    poison_after_update(monkeypatch, 20)  # the last update of epoch 2
    out = tmp_path / 'result'
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--epoch', '3', '--out', str(out), '--noplot'] +
                         SMALL)
    assert e.value.code == 3
    assert one_error_line(capsys) == (
        'train_mnist.py: error: training diverged: parameter '
        'predictor/b2/beta became nan in the update at epoch 2, iteration '
        '20; stopped without saving anything of it; the last good snapshot '
        'is {} (a lower --lr may help)'.format(out / 'snapshot_iter_10'))
    assert [entry['epoch'] for entry in read_log(out)] == [0, 1]
    assert sorted(name for name in os.listdir(str(out))
                  if 'snapshot' in name) == ['snapshot_iter_10']
    # the last good snapshot resumes (and, unpoisoned, finishes)
    monkeypatch.undo()
    assert train_mnist.main(['--epoch', '3', '--out', str(out), '--noplot',
                             '--resume', 'auto'] + SMALL) == 0


def test_divergence_check_can_be_turned_off(tmp_path, monkeypatch):
    poison_after_update(monkeypatch, 5)
    out = tmp_path / 'result'
    assert train_mnist.main(['--epoch', '1', '--out', str(out), '--noplot',
                             '--no-divergence-check'] + SMALL) == 0
    assert numpy.isnan(read_log(out)[-1]['main/loss'])


def test_quantization_options_end_to_end(tmp_path, capsys):
    out = tmp_path / 'result'
    options = ['--weight-bits', '2', '--activation-bits', '4',
               '--quantizer', 'log', '--stochastic-activations',
               '--stochastic-weights', '--gradient-bits', '2',
               '--error-bits', '8']
    assert train_mnist.main(['--epoch', '1', '--out', str(out), '--noplot',
                             '--lr', '0.01'] + options + SMALL) == 0
    captured = capsys.readouterr()
    assert ('# bits: weights 2, activations 4, gradients 2, errors 8 '
            '(log, stochastic weights and activations)') in \
        captured.out.splitlines()
    # 2-bit gradients for 2-bit weights: warned, not refused
    assert captured.err.startswith(
        'train_mnist.py: warning: --gradient-bits 2 is not larger than '
        '--weight-bits 2')
    with open(str(out / 'config.json')) as f:
        config = json.load(f)
    assert (config['weight_bits'], config['activation_bits'],
            config['quantizer'], config['stochastic_activations'],
            config['stochastic_weights'], config['gradient_bits'],
            config['error_bits']) == (2, 4, 'log', True, True, 2, 8)
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
    (['--resume', ROOT], 'not a file'),
    (['--snapshot-keep', '0'], 'must be a positive integer, got 0'),
    (['--train-subset', '0'], 'must be a positive integer, got 0'),
    (['--test-subset', '-3'], 'must be a positive integer, got -3'),
    (['--unit', '1e3'], "'1e3' is not an integer"),
    (['--epoch', ''], "'' is not an integer"),
    (['--eval-batchsize', '0'], 'must be a positive integer, got 0'),
    (['--random-shift', '-1'], 'must be 0 or more, got -1'),
    (['--bn-population', '-1'], 'must be 0 or more, got -1'),
    (['--bn-population', '99'], '--bn-population 99: at least one '
                                'minibatch (--batchsize 100) or 0'),
    (['--bn-population', '100', '--communicator', 'naive'],
     '--bn-population: single-process runs only'),
    # sizes beyond the memory of any machine here, refused before anything
    # is allocated
    (['--unit', '100000000'], '--unit 100000000 --layers 2: the network '
                              'needs at least'),
    (['--layers', '100000'], '--unit 1000 --layers 100000: the network '
                             'needs at least'),
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


def unwritable_directory(tmp_path):
    """A directory this process cannot write to: a read-only one, or, for
    root, whom permissions do not stop, /sys (mounted read-only)."""
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with open(str(locked / 'probe'), 'w'):
            pass
    except OSError:
        return str(locked)
    for candidate in ('/sys', '/proc'):
        if not os.access(candidate, os.W_OK) or not _can_write(candidate):
            return candidate
    pytest.skip('no unwritable directory here')


def _can_write(directory):
    try:
        with open(os.path.join(directory, 'qnn-probe'), 'w'):
            pass
    except OSError:
        return False
    os.remove(os.path.join(directory, 'qnn-probe'))
    return True


@pytest.mark.parametrize('case', ['file', 'under a file', 'unwritable'])
def test_unusable_output_directory_is_one_line(tmp_path, capsys, case):
    if case == 'unwritable':
        parent = unwritable_directory(tmp_path)
        out = os.path.join(parent, 'result')
        reason = 'cannot write to the output directory {}: '.format(out)
    else:
        blocker = tmp_path / 'result'
        blocker.write_text('not a directory')
        out = str(blocker) if case == 'file' else str(blocker / 'sub')
        reason = 'cannot write to the output directory {}: {} is not a ' \
            'directory'.format(out, blocker)
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--out', out] + SMALL)
    assert e.value.code == 1
    assert one_error_line(capsys).startswith('train_mnist.py: error: ' +
                                             reason)
    assert not os.path.exists(os.path.join(out, 'log'))
    if case != 'unwritable':
        assert blocker.read_text() == 'not a directory'


@pytest.fixture(scope='module')
def good_snapshot(tmp_path_factory):
    out = tmp_path_factory.mktemp('good')
    assert train_mnist.main(['--epoch', '1', '--out', str(out), '--noplot']
                            + SMALL) == 0
    return out / 'snapshot_iter_10'


def bad_snapshot(tmp_path, good, kind):
    path = tmp_path / 'snapshot'
    data = good.read_bytes()
    if kind == 'truncated':
        path.write_bytes(data[:len(data) // 3])
    elif kind == 'bit flip':
        at = len(data) // 2  # inside a member's compressed data
        path.write_bytes(data[:at] + bytes([data[at] ^ 0xff]) +
                         data[at + 1:])
    elif kind == 'text':
        path.write_bytes(b'this is not a snapshot')
    elif kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'other npz':
        with open(str(path), 'wb') as f:
            numpy.savez(f, W=numpy.zeros((32, 784)))
    else:
        return good
    return path


@pytest.mark.parametrize('kind, options, reason', [
    ('truncated', [], 'it is truncated or corrupted (BadZipFile: File is '
                      'not a zip file)'),
    ('bit flip', [], 'it is '),  # the CRC check or zlib: zlib's choice
    ('text', [], 'it is not a snapshot (not an NPZ archive)'),
    ('empty', [], 'it is not a snapshot (not an NPZ archive)'),
    ('other npz', [], 'it is not a snapshot of a trainer (an NPZ archive '
                      'without updater/iteration)'),
    ('good', ['--unit', '16'],
     'updater/model:main/predictor/b1/avg_mean has shape (32,) in the '
     'snapshot but (16,) here: the network differs (--unit)'),
    ('good', ['--train-subset', '400'],
     'updater/iterator:main/order has shape (500,) in the snapshot but '
     '(400,) here: the number of training images differs (--train-subset, '
     '--data-dir)'),
    ('good', ['--plot'], 'it has no extension_triggers/PlotReport/'),
])
def test_bad_snapshot_is_one_line(tmp_path, capsys, good_snapshot, kind,
                                  options, reason):
    snapshot = bad_snapshot(tmp_path, good_snapshot, kind)
    out = tmp_path / 'result'
    args = SMALL + [o for o in options if o != '--plot']
    if '--plot' not in options:
        args.append('--noplot')
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--resume', str(snapshot), '--out', str(out)] +
                         args)
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert err.startswith('train_mnist.py: error: cannot resume from {}: {}'
                          .format(snapshot, reason)), err
    if kind == 'bit flip':
        assert 'corrupted' in err
    assert not out.exists()  # nothing written


def test_resume_auto_refuses_a_snapshot_of_another_network(
        tmp_path, capsys, good_snapshot):
    out = tmp_path / 'result'
    out.mkdir()
    shutil.copy(str(good_snapshot), str(out))
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--resume', 'auto', '--out', str(out), '--noplot']
                         + SMALL + ['--unit', '16'])
    assert e.value.code == 1
    assert one_error_line(capsys).startswith(
        'train_mnist.py: error: cannot resume from {}: updater/model:main/'
        .format(out / 'snapshot_iter_10'))
    assert run_files(out) == ['snapshot_iter_10']


def test_missing_data_dir_is_one_line(tmp_path):
    proc = run_script('--data-dir', str(tmp_path / 'nowhere'), '--epoch',
                      '1', '--out', str(tmp_path / 'result'))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert 'train-images-idx3-ubyte' in lines[0]
    assert str(tmp_path / 'nowhere') in lines[0]
    assert not (tmp_path / 'result').exists()


def test_corrupted_data_file_is_one_line(tmp_path, capsys):
    data = tmp_path / 'mnist'
    shutil.copytree(mnist.EMBEDDED_DIR, str(data))
    labels = data / 't10k-labels-idx1-ubyte.gz'
    content = bytearray(labels.read_bytes())
    content[len(content) // 2] ^= 0xff
    labels.write_bytes(bytes(content))
    out = tmp_path / 'result'
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--data-dir', str(data), '--out', str(out)] +
                         SMALL)
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert str(labels) in err or 't10k-labels-idx1-ubyte' in err
    assert not out.exists()


# One recipe per run (qnn/training/run_history.py, qnn/training/output_lock.py)

def test_resume_refuses_a_changed_recipe(tmp_path, capsys, good_snapshot):
    out = good_snapshot.parent
    before = {name: (out / name).read_bytes() for name in run_files(out)}
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--epoch', '2', '--out', str(out), '--resume',
                          'auto', '--noplot', '--weight-bits', '2',
                          '--seed', '5'] + SMALL)
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert "--seed 0 in the snapshot's run, 5 now" in err
    assert "--weight-bits 1 in the snapshot's run, 2 now" in err
    # nothing of the refused run was written
    assert {name: (out / name).read_bytes()
            for name in run_files(out)} == before


def test_resume_with_more_epochs_is_recorded(tmp_path, capsys):
    out = tmp_path / 'result'
    args = ['--noplot', '--out', str(out)] + SMALL
    assert train_mnist.main(['--epoch', '1'] + args) == 0
    assert train_mnist.main(['--epoch', '2', '--resume', 'auto'] + args) \
        == 0
    with open(str(out / 'config.json')) as f:
        config = json.load(f)
    assert config['epoch'] == 1  # the recipe: the first run's
    [entry] = config['resumed']
    assert entry['iteration'] == 10
    assert entry['snapshot'] == str(out / 'snapshot_iter_10')
    assert entry['changed'] == {'epoch': [1, 2], 'resume': [None, 'auto']}
    # the step size keeps the first run's rate (1e-2 a epoch for a 1-epoch
    # schedule from 1e-3 to 1e-5): epoch 2 runs at 1e-5
    alphas = [entry['alpha'] for entry in read_log(out)[1:]]
    assert alphas[0] == pytest.approx(1e-3)
    assert alphas[1] == pytest.approx(1e-3 * (1e-5 / 1e-3) ** 1)


def test_resumed_halving_schedule_goes_on(tmp_path):
    out = tmp_path / 'result'
    args = ['--noplot', '--out', str(out), '--lr', '0.01', '--lr-schedule',
            'halving', '--lr-halving-epochs', '2'] + SMALL
    assert train_mnist.main(['--epoch', '3'] + args) == 0
    assert train_mnist.main(['--epoch', '5', '--resume', 'auto'] + args) \
        == 0
    alphas = [entry['alpha'] for entry in read_log(out)[1:]]
    assert alphas == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])


def test_resume_of_a_run_older_than_the_two_stochastic_options(
        tmp_path, capsys, good_snapshot):
    # its config.json has one `stochastic`, for weights and activations
    out = tmp_path / 'result'
    out.mkdir()
    shutil.copy(str(good_snapshot), str(out))
    config = json.loads((good_snapshot.parent / 'config.json').read_text())
    del config['stochastic_activations'], config['stochastic_weights']
    config['stochastic'] = True
    (out / 'config.json').write_text(json.dumps(config))
    args = ['--epoch', '2', '--noplot', '--out', str(out), '--resume',
            'auto'] + SMALL
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_mnist.main(args)
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert ("--stochastic-activations true in the snapshot's run, false "
            "now; --stochastic-weights true in the snapshot's run, false "
            "now") in err
    assert train_mnist.main(args + ['--stochastic-activations',
                                    '--stochastic-weights']) == 0
    with open(str(out / 'config.json')) as f:
        config = json.load(f)
    assert 'stochastic' not in config
    assert config['stochastic_activations'] and config['stochastic_weights']
    [entry] = config['resumed']
    assert entry['iteration'] == 10


def test_resume_without_config_beside_the_snapshot(tmp_path, capsys,
                                                   good_snapshot):
    snapshot = tmp_path / 'snapshot_iter_10'
    snapshot.write_bytes(good_snapshot.read_bytes())
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--epoch', '2', '--noplot', '--resume',
                          str(snapshot), '--out', str(tmp_path / 'r')] +
                         SMALL)
    assert e.value.code == 1
    assert 'no config.json beside it' in one_error_line(capsys)
    assert not (tmp_path / 'r').exists()


def test_a_busy_output_directory_is_refused(tmp_path, capsys):
    out = tmp_path / 'result'
    out.mkdir()
    with output_lock.OutputLock(str(out)):
        before = run_files(out)
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            train_mnist.main(['--epoch', '1', '--noplot', '--out', str(out)]
                             + SMALL)
        assert e.value.code == 1
        err = one_error_line(capsys)
        assert str(out) in err
        assert 'process {}'.format(os.getpid()) in err
        assert run_files(out) == before == []


def test_a_directory_of_another_run_is_refused_or_replaced(tmp_path,
                                                           capsys):
    # a second run would replace config.json, log and the same-named
    # snapshots and leave the others, which then fit no config.json
    out = tmp_path / 'result'
    first = ['--epoch', '2', '--noplot', '--out', str(out)] + SMALL
    assert train_mnist.main(first) == 0
    before = {name: (out / name).read_bytes() for name in run_files(out)}
    capsys.readouterr()
    second = ['--epoch', '1', '--noplot', '--out', str(out), '--unit', '30',
              '--train-subset', '500', '--batchsize', '50']
    for resume in ([], ['--resume', str(tmp_path / 'other' / 'x')]):
        if resume:  # a snapshot of another directory resumed into this one
            (tmp_path / 'other').mkdir()
            (tmp_path / 'other' / 'x').write_bytes(before['snapshot_iter_20'])
        with pytest.raises(SystemExit) as e:
            train_mnist.main(second + resume)
        assert e.value.code == 1
        err = one_error_line(capsys)
        for word in ('another run', '--resume auto', '--out',
                     '--replace-out', 'config.json'):
            assert word in err, err
        assert {name: (out / name).read_bytes()
                for name in run_files(out)} == before
    assert train_mnist.main(second + ['--replace-out']) == 0
    assert run_files(out) == ['cg.dot', 'config.json', 'log',
                              'snapshot_iter_10']
    with open(str(out / 'config.json')) as f:
        assert json.load(f)['unit'] == 30
    # the run itself goes on with --resume auto, without --replace-out
    assert train_mnist.main(second[:1] + ['2'] + second[2:] +
                            ['--resume', 'auto']) == 0
    assert 'snapshot_iter_20' in run_files(out)


def test_a_failed_snapshot_write_is_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / 'result'
    save = snapshots.save_npz
    calls = []

    def save_then_fail(f, obj):
        calls.append(1)
        if len(calls) == 2:
            f.write(b'partial')
            raise OSError(28, 'No space left on device')
        save(f, obj)

    monkeypatch.setattr(snapshots, 'save_npz', save_then_fail)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--epoch', '3', '--noplot', '--out', str(out)] +
                         SMALL)
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert 'No space left on device' in err
    assert 'snapshot_iter_10 is intact' in err
    assert run_files(out) == ['cg.dot', 'config.json', 'log',
                              'snapshot_iter_10']
    # the intact snapshot resumes
    monkeypatch.setattr(snapshots, 'save_npz', save)
    assert train_mnist.main(['--epoch', '3', '--noplot', '--out', str(out),
                             '--resume', 'auto'] + SMALL) == 0


# The paper's recipes and their pieces (train_options, model_selection)

def test_recipe_values_are_defaults_that_options_override():
    args = train_options.parse_args(['--recipe', 'binarynet-theano',
                                     '--unit', '64', '--input-dropout', '0'])
    assert (args.unit, args.layers, args.loss) == (64, 3, 'squared_hinge')
    assert (args.input_dropout, args.hidden_dropout) == (0.0, 0.5)
    assert args.glorot_step_sizes and args.validation == 10000
    assert (args.weight_init, args.input_range) == ('uniform', 'symmetric')
    args = train_options.parse_args(['--recipe', 'binarynet-theano',
                                     '--weight-init', 'lecun-normal'])
    assert args.weight_init == 'lecun-normal'
    args = train_options.parse_args(['--recipe', 'binarynet-torch'])
    assert args.stochastic_activations and not args.stochastic_weights
    args = train_options.parse_args(['--recipe', 'binarynet-torch',
                                     '--no-stochastic-activations',
                                     '--stochastic-weights'])
    assert not args.stochastic_activations and args.stochastic_weights
    assert args.optimizer == 'shift_adamax'
    for options, rounded in (([], True), (['--adamax-norm', 'decaying'],
                                          False)):
        args = train_options.parse_args(['--recipe', 'binarynet-torch'] +
                                        options)
        model = train_mnist.build_model(args)
        optimizer = train_mnist.build_optimizer(args, model)
        assert optimizer.round_norm is rounded
    assert vars(train_options.parse_args([])) == vars(
        train_options.parse_args(['--recipe', 'default']))


def test_help_lists_what_each_recipe_sets(capsys):
    with pytest.raises(SystemExit):
        train_options.parse_args(['--help'])
    out = capsys.readouterr().out
    for name in ('default', 'binarynet-theano', 'binarynet-torch'):
        assert '  {}: '.format(name) in out
    assert 'hidden_dropout=0.5' in out
    torch, = [line for line in out.splitlines()
              if line.startswith('  binarynet-torch: ')]
    assert 'stochastic_activations=True, stochastic_weights=False' in torch


@pytest.mark.parametrize('option', ['--stochastic', '--no-stochastic'])
def test_one_stochastic_switch_for_both_is_gone(option, capsys):
    # weights and activations have one switch each: the old option is an
    # ambiguous prefix of both
    with pytest.raises(SystemExit) as e:
        train_options.parse_args([option])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'ambiguous option: {} could match'.format(option) in err
    assert '{}-activations'.format(option) in err
    assert '{}-weights'.format(option) in err


@pytest.mark.parametrize('options, shown', [
    ([], '(linear)'),
    (['--stochastic-activations'], '(linear, stochastic activations)'),
    (['--stochastic-weights'], '(linear, stochastic weights)'),
    (['--stochastic-weights', '--stochastic-activations'],
     '(linear, stochastic weights and activations)'),
])
def test_header_says_what_is_stochastic(options, shown, capsys):
    run_output.print_header(train_options.parse_args(options), '@numpy')
    assert '# bits: weights 1, activations 1, gradients 32, errors 32 ' + \
        shown in capsys.readouterr().out.splitlines()


def test_validation_split_reports_test_and_best_epoch(tmp_path, capsys):
    out = tmp_path / 'result'
    assert train_mnist.main(['--epoch', '2', '--noplot', '--out', str(out),
                             '--validation', '300', '--recipe',
                             'binarynet-theano', '--layers', '2'] +
                            SMALL) == 0
    printed = capsys.readouterr().out
    assert 'test/main/accuracy' in printed and 'best/epoch' in printed
    log = read_log(out)
    # the latest of the best on ties
    best = max(log[1:], key=lambda e: (e['validation/main/accuracy'],
                                       e['epoch']))
    assert log[-1]['best/epoch'] == best['epoch']
    assert log[-1]['best/test/main/accuracy'] == best['test/main/accuracy']
    assert '# best validation accuracy {:.4f} at epoch {}'.format(
        best['validation/main/accuracy'], best['epoch']) in printed
    with open(str(out / 'config.json')) as f:
        config = json.load(f)
    # the expanded recipe is recorded
    assert (config['recipe'], config['loss'], config['hidden_dropout'],
            config['layers']) == ('binarynet-theano', 'squared_hinge', 0.5, 2)


def test_validation_images_are_the_last_and_not_trained_on():
    args = train_options.parse_args(['--validation', '500'])
    train, validation, test = splits.load_splits(args)
    full, _ = mnist.get_mnist()
    assert len(train) == len(full) - 500 and len(validation) == 500
    numpy.testing.assert_array_equal(validation[0][0], full[-500][0])
    numpy.testing.assert_array_equal(train[len(train) - 1][0],
                                     full[len(full) - 501][0])


@pytest.mark.parametrize('options, low', [
    ([], 0.0), (['--recipe', 'binarynet-theano'], -1.0),
    (['--recipe', 'binarynet-theano', '--input-range', 'unit'], 0.0),
    (['--input-range', 'symmetric'], -1.0)])
def test_input_range_reaches_the_data(options, low):
    args = train_options.parse_args(options + ['--validation', '500'])
    for dataset in splits.load_splits(args):
        columns, index = array_iterator.dataset_columns(dataset)
        x = columns[0] if index is None else columns[0][index]
        assert (x.min(), x.max()) == (low, 1.0)


def test_unknown_input_range(capsys):
    with pytest.raises(SystemExit) as e:
        train_options.parse_args(['--input-range', 'signed'])
    assert e.value.code == 2
    assert "invalid choice: 'signed'" in capsys.readouterr().err


def test_validation_larger_than_the_training_set(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--validation', '60000', '--out',
                          str(tmp_path / 'r')])
    assert e.value.code == 2
    assert '--validation 60000 leaves no training image' in \
        one_error_line(capsys)


def test_bn_population_more_than_the_training_set(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--bn-population', '600', '--out',
                          str(tmp_path / 'r')] + SMALL)
    assert e.value.code == 2
    assert '--bn-population 600 is more than the 500 training images' in \
        one_error_line(capsys)


def test_bn_population_changes_the_statistics_only(tmp_path):
    # training never reads the running statistics: the same weights,
    # optimizer state and training losses, other evaluations
    runs = {}
    for name, options in (('running', []),
                          ('population', ['--bn-population', '300'])):
        out = tmp_path / name
        assert train_mnist.main(['--epoch', '2', '--noplot', '--out',
                                 str(out)] + SMALL + options) == 0
        runs[name] = (log_values(out),
                      dict(numpy.load(str(out / 'snapshot_iter_20'))))
    (log_a, snap_a), (log_b, snap_b) = runs['running'], runs['population']
    assert [e.get('main/loss') for e in log_a] == \
        [e.get('main/loss') for e in log_b]
    assert [e['validation/main/loss'] for e in log_a] != \
        [e['validation/main/loss'] for e in log_b]
    differ = sorted(key.rsplit('/', 1)[-1] for key in snap_a
                    if key.startswith('updater/') and
                    not numpy.array_equal(snap_a[key], snap_b[key]))
    assert differ and set(differ) == {'avg_mean', 'avg_var'}


def test_torch_recipe_pieces_train(tmp_path):
    out = tmp_path / 'result'
    assert train_mnist.main(['--recipe', 'binarynet-torch', '--layers', '2',
                             '--epoch', '2', '--validation', '300',
                             '--noplot', '--out', str(out)] + SMALL) == 0
    log = read_log(out)
    assert log[-1]['main/loss'] < log[1]['main/loss']


# Convolutional networks and other data sets (--arch, --dataset)

def test_augmentation_moves_training_images_only(tmp_path, capsys):
    logs = {}
    for name, options in (('plain', []),
                          ('moved', ['--random-shift', '2',
                                     '--random-flip'])):
        out = tmp_path / name
        assert train_mnist.main(['--epoch', '1', '--noplot', '--out',
                                 str(out)] + SMALL + options) == 0
        logs[name] = read_log(out)
        with open(str(out / 'config.json')) as f:
            config = json.load(f)
        assert (config['random_shift'], config['random_flip']) == (
            (2, True) if options else (0, False))
    assert ('# augmentation: shifts of up to 2 pixels, left-right mirror'
            in capsys.readouterr().out)
    # the same network evaluated before training: the test images as they
    # are; after an epoch on moved images, another training
    assert logs['plain'][0] == {**logs['moved'][0], 'elapsed_time':
                                logs['plain'][0]['elapsed_time']}
    assert logs['plain'][1]['main/loss'] != logs['moved'][1]['main/loss']


def test_binarized_cnn_trains(tmp_path):
    out = tmp_path / 'result'
    assert train_mnist.main(['--arch', 'cnn', '--epoch', '2', '--noplot',
                             '--out', str(out), '--train-subset', '300',
                             '--test-subset', '100', '--batchsize', '50',
                             '--lr', '0.01', '--lr-schedule',
                             'constant']) == 0
    log = read_log(out)
    assert log[-1]['main/loss'] < log[1]['main/loss']
    with open(str(out / 'config.json')) as f:
        config = json.load(f)
    assert (config['arch'], config['cnn_size']) == ('cnn', 'small')
    # the snapshot holds convolution filters
    with numpy.load(str(out / 'snapshot_iter_12')) as snapshot:
        assert snapshot['updater/model:main/predictor/conv1_1/W'].ndim == 4


def test_binarized_cnn_with_glorot_step_sizes_and_shift_adamax(tmp_path):
    # the convolutions' weights must exist before the step sizes are scaled
    out = tmp_path / 'result'
    assert train_mnist.main(['--arch', 'cnn', '--glorot-step-sizes',
                             '--optimizer', 'shift_adamax', '--epoch', '1',
                             '--noplot', '--out', str(out),
                             '--train-subset', '100', '--test-subset',
                             '100', '--batchsize', '50']) == 0
    assert read_log(out)[-1]['epoch'] == 1


def test_fashion_mnist_mlp_trains(tmp_path, capsys):
    from qnn.datasets import fashion_mnist
    if not fashion_mnist.available():
        if os.environ.get('QNN_REQUIRE_FASHION_MNIST') == '1':
            pytest.fail('Fashion-MNIST is not installed (make fashion-mnist)')
        pytest.skip('Fashion-MNIST is not installed (make fashion-mnist)')
    out = tmp_path / 'result'
    assert train_mnist.main(['--dataset', 'fashion-mnist', '--epoch', '1',
                             '--noplot', '--out', str(out)] + SMALL) == 0
    assert '# dataset: fashion-mnist' in capsys.readouterr().out
    assert read_log(out)[-1]['validation/main/accuracy'] > 0.3


@pytest.mark.parametrize('args, reason', [
    (['--arch', 'transformer'], "argument --arch: invalid choice"),
    (['--dataset', 'svhn'], "argument --dataset: invalid choice"),
    (['--arch', 'cnn', '--unit', '50'], '--arch cnn: --unit set the MLP'),
    (['--arch', 'cnn', '--recipe', 'binarynet-theano'], '--arch cnn: '),
])
def test_bad_arch_or_dataset_exit_2(capsys, args, reason):
    with pytest.raises(SystemExit) as e:
        train_options.parse_args(args)
    assert e.value.code == 2
    assert reason in capsys.readouterr().err


def test_cifar10_without_data_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--dataset', 'cifar10', '--data-dir',
                          str(tmp_path), '--out', str(tmp_path / 'r')])
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert 'cifar-10' in err.lower() and str(tmp_path) in err
    assert not (tmp_path / 'r').exists()

"""Data-parallel training over MPI: qnn/training/multi_node.py and
``train_mnist.py --communicator``, with real ``mpiexec -n 2`` runs.

The MPI tests need mpi4py and an MPI (``make mpi``; ``make test`` installs
them). Without them they are skipped, except in CI (``CI=true``), where they
fail: CI must run them.
"""
import json
import os
import signal
import subprocess
import sys

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.links as L

import net
from qnn.datasets import mnist
from qnn.training import multi_node
from qnn.training.extensions import snapshots
from qnn.utils import errors
import train_mnist

from helpers import ROOT, TRAIN_MNIST

WORKER = os.path.join(ROOT, 'tests', 'training', 'mpi_worker.py')
UNITS = 64
TEST_IMAGES = 400
# 2000 images, 1 epoch: 20 steps of a global minibatch of 100. The large
# step size drives weights onto WeightClip's bounds within that epoch, so
# that equal weights on both ranks show the hook ran on both.
CONFIG = ['--unit', str(UNITS), '--train-subset', '2000', '--test-subset',
          str(TEST_IMAGES), '--epoch', '1', '--lr', '0.1', '--noplot']
PER_RANK_BATCH = 50
STEPS = 2000 // (2 * PER_RANK_BATCH)


def run_files(directory):
    """The files of a run, without the output lock
    (qnn/training/output_lock.py)."""
    return sorted(name for name in os.listdir(str(directory))
                  if not name.startswith('.lock'))


def _environment(**extra):
    env = dict(os.environ)
    # one BLAS thread per process: two ranks on two cores, repeatable sums
    env.update(OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1')
    env.update(extra)
    return env


def _run(command, env=None, timeout=300):
    return subprocess.run(command, cwd=ROOT, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=env or _environment(),
                          timeout=timeout)


@pytest.fixture(scope='module')
def two_ranks(mpiexec, tmp_path_factory):
    """One real 2-process run (MPMD: the ranks differ only in --out, so
    that anything rank 1 wrote would show). Returns the finished process,
    rank 0's and rank 1's output directories and the directory of the
    ranks' final models."""
    base = tmp_path_factory.mktemp('two_ranks')
    dump = base / 'models'
    dump.mkdir()
    outs = [base / 'out0', base / 'out1']

    def rank(out):
        return ['-n', '1', sys.executable, WORKER, str(dump),
                '--communicator', 'naive', '--batchsize',
                str(PER_RANK_BATCH), '--out', str(out)] + CONFIG

    proc = _run([mpiexec] + rank(outs[0]) + [':'] +
                rank(outs[1]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, outs, dump


def _read_log(out):
    with open(os.path.join(str(out), 'log')) as f:
        return json.load(f)


def test_rank_0_alone_reports(two_ranks):
    proc, (out0, out1), _ = two_ranks
    assert 'Traceback' not in proc.stderr
    # the header and the report once: rank 1 printed nothing
    text = proc.stdout.splitlines()
    assert text[:4] == ['Device: @numpy', '# unit: {}'.format(UNITS),
                        '# Minibatch-size: {}'.format(PER_RANK_BATCH),
                        '# processes: 2 (naive communicator), global '
                        'minibatch {}'.format(2 * PER_RANK_BATCH)]
    assert text.count('Device: @numpy') == 1
    header = text.index(next(line for line in text
                             if line.startswith('epoch')))
    assert [line.split()[0] for line in text[header:]] == ['epoch', '0', '1']
    assert run_files(out0) == [
        'cg.dot', 'config.json', 'log', 'snapshot_iter_{}'.format(STEPS)]
    # Chainer's Trainer.run creates its directory on every rank; rank 1
    # writes nothing in it
    assert not out1.exists() or os.listdir(str(out1)) == []
    log = _read_log(out0)
    assert [entry['epoch'] for entry in log] == [0, 1]
    assert log[-1]['iteration'] == STEPS


def _load(path):
    with numpy.load(str(path)) as f:
        return {key: f[key] for key in f.files}


def test_ranks_end_identical(two_ranks):
    _, _, dump = two_ranks
    rank0, rank1 = _load(dump / 'rank0.npz'), _load(dump / 'rank1.npz')
    assert sorted(rank0) == sorted(rank1)
    for layer in ('b1', 'b2', 'b3'):
        for name in ('avg_mean', 'avg_var', 'gamma', 'beta'):
            assert 'predictor/{}/{}'.format(layer, name) in rank0
        # the running statistics moved away from their initial values
        assert numpy.any(rank0['predictor/{}/avg_mean'.format(layer)] != 0)
    for key in sorted(rank0):
        numpy.testing.assert_array_equal(rank0[key], rank1[key],
                                         err_msg=key)
    weights = [rank0['predictor/l{}/W'.format(i)] for i in (1, 2, 3)]
    assert all(numpy.abs(W).max() <= 1 for W in weights)
    # WeightClip did clip: some weights sit on the bounds
    assert sum(numpy.count_nonzero(numpy.abs(W) == 1) for W in weights) > 0


def test_rank_0_snapshot_evaluates_as_reported(two_ranks):
    # The snapshot loads into the single-process model (plain
    # BatchNormalization) and scores on the whole test subset what the
    # ranks reported together, each on its half.
    _, (out0, _), dump = two_ranks
    model = L.Classifier(net.MnistMLP(784, UNITS, 10))
    snapshots.load_arrays(str(out0 / 'snapshot_iter_{}'.format(STEPS)),
                          model, 'updater/model:main/')
    final = _load(dump / 'rank0.npz')
    loaded = chainer.serializers.DictionarySerializer()
    loaded.save(model)
    assert sorted(loaded.target) == sorted(final)
    for key in sorted(final):
        numpy.testing.assert_array_equal(loaded.target[key], final[key],
                                         err_msg=key)
    _, test = mnist.get_mnist()
    x, t = chainer.dataset.concat_examples(test[:TEST_IMAGES])
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        loss = model(x, t)
    reported = _read_log(out0)[-1]
    assert float(model.accuracy.array) == pytest.approx(
        reported['validation/main/accuracy'], abs=1e-6)
    assert float(loss.array) == pytest.approx(
        reported['validation/main/loss'], rel=1e-5)


def test_accuracy_close_to_one_process(two_ranks, tmp_path):
    _, (out0, _), _ = two_ranks
    out = tmp_path / 'single'
    assert train_mnist.main(CONFIG + ['--batchsize', str(2 * PER_RANK_BATCH),
                                      '--out', str(out)]) == 0
    single = _read_log(out)[-1]['validation/main/accuracy']
    double = _read_log(out0)[-1]['validation/main/accuracy']
    assert single > 0.5 and double > 0.5  # both learned (chance is 0.1)
    assert abs(single - double) <= 0.1, (single, double)


def test_failing_rank_ends_the_job(mpiexec, tmp_path):
    # rank 0 alone reads the data: its error must not leave rank 1 waiting
    proc = _run([mpiexec, '-n', '2', sys.executable, TRAIN_MNIST,
                 '--communicator', 'naive', '--data-dir',
                 str(tmp_path / 'nowhere'), '--out', str(tmp_path / 'out')],
                timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith('train_mnist.py: error: ')
    assert 'train-images-idx3-ubyte' in lines[0]


def test_divergence_stops_both_ranks(mpiexec, tmp_path):
    # one NaN image reaches one rank only; the loss both ranks check is the
    # mean over the ranks, so both stop at the same iteration
    proc = _run([mpiexec, '-n', '2', sys.executable, WORKER, str(tmp_path),
                 '--poison', '123', '--communicator', 'naive',
                 '--batchsize', str(PER_RANK_BATCH), '--epoch', '2',
                 '--out', str(tmp_path / 'out'), '--unit', str(UNITS),
                 '--train-subset', '2000', '--noplot'], timeout=120)
    assert proc.returncode == errors.EXIT_DIVERGED, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith('train_mnist.py: error: training diverged: '
                               'main/loss is nan at epoch 1, iteration ')


def test_ctrl_c_stops_every_rank_at_once(mpiexec, tmp_path):
    out = tmp_path / 'result'
    proc = subprocess.Popen(
        [mpiexec, '-n', '2', sys.executable, TRAIN_MNIST, '--communicator',
         'naive', '--batchsize', str(PER_RANK_BATCH), '--out', str(out),
         '--unit', str(UNITS), '--train-subset', '2000', '--test-subset',
         str(TEST_IMAGES), '--epoch', '200', '--noplot'],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, universal_newlines=True, env=_environment())
    # wait for the report of epoch 2: epoch 1's snapshot is complete
    for line in proc.stdout:
        if line.split()[:1] == ['2']:
            break
    proc.send_signal(signal.SIGINT)  # to mpiexec, which passes it on
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert 'Traceback' not in err
    lines = [line for line in err.splitlines()
             if line.startswith('train_mnist.py')]
    assert lines == ['train_mnist.py: stopped by SIGINT under mpiexec: every '
                     'rank stops at once; to continue, run the same command '
                     'with --resume auto']
    assert any(name.startswith('snapshot_iter_')
               for name in os.listdir(str(out)))


def _mpi4py_shadow(tmp_path):
    """A directory that, first on PYTHONPATH, makes `import mpi4py` fail
    exactly as it does where mpi4py is not installed."""
    package = tmp_path / 'shadow' / 'mpi4py'
    package.mkdir(parents=True)
    (package / '__init__.py').write_text(
        'raise ModuleNotFoundError("No module named \'mpi4py\'", '
        'name="mpi4py")\n')
    return str(package.parent)


def test_without_mpi4py_is_one_line(tmp_path):
    env = _environment(PYTHONPATH=_mpi4py_shadow(tmp_path))
    proc = _run([sys.executable, TRAIN_MNIST, '--communicator', 'naive',
                 '--out', str(tmp_path / 'out')], env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == ''
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0] == (
        "train_mnist.py: error: --communicator needs mpi4py and an MPI, and "
        "mpi4py cannot be imported (No module named 'mpi4py'): run `make "
        "mpi` (pip install -r requirements-mpi.txt)")
    assert not (tmp_path / 'out').exists()


def test_without_mpi_library_is_one_line(mpiexec, tmp_path):
    # mpi4py's own setting for the MPI library, pointed at nothing
    env = _environment(MPI4PY_LIBMPI=str(tmp_path / 'libmpi.so'))
    proc = _run([sys.executable, TRAIN_MNIST, '--communicator', 'naive',
                 '--out', str(tmp_path / 'out')], env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == ''
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert 'mpi4py finds no MPI library' in lines[0]
    assert str(tmp_path / 'libmpi.so') in lines[0]
    assert lines[0].endswith('run `make mpi` (pip install -r '
                             'requirements-mpi.txt)')


def test_mpiexec_without_communicator_is_one_line(monkeypatch, capsys,
                                                  tmp_path):
    monkeypatch.setenv('PMI_SIZE', '2')  # what MPICH's mpiexec sets
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--out', str(tmp_path / 'out')])
    assert e.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ''
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert 'one of 2 processes without --communicator' in lines[0]


@pytest.mark.parametrize('communicator', ['flat', 'pure_nccl'])
def test_gpu_communicator_without_cuda_is_one_line(communicator, capsys):
    if chainer.backends.cuda.available:
        pytest.skip('CuPy is installed here')
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--communicator', communicator])
    assert e.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert '--communicator {} reduces on GPUs and needs CUDA'.format(
        communicator) in lines[0]


@pytest.mark.parametrize('args, message', [
    (['--communicator', 'mpi'], 'invalid choice'),
    (['--communicator', 'pure_nccl', '--gpu', '0'],
     'gives each process the GPU of its local rank'),
    (['--communicator', 'flat', '--device', '@cupy:1'],
     'leave out --device/--gpu'),
])
def test_bad_communicator_arguments_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        train_mnist.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('usage:')
    assert message in err


@pytest.mark.parametrize('environ, size', [
    ({}, 1),
    ({'PMI_SIZE': '4'}, 4),
    ({'OMPI_COMM_WORLD_SIZE': '3'}, 3),
    ({'PMI_SIZE': 'x', 'OMPI_COMM_WORLD_SIZE': '2'}, 2),
])
def test_launched_size(environ, size):
    assert multi_node.launched_size(environ) == size


def test_single_process_is_untouched():
    model = L.Classifier(net.MnistMLP(784, 8, 10))
    optimizer = chainer.optimizers.Adam()
    assert multi_node.synchronize_batch_normalization(model, None) is model
    assert multi_node.data_parallel_optimizer(optimizer, None) is optimizer
    dataset = [1, 2, 3]
    assert multi_node.scatter(dataset, None, shuffle=True, seed=0) is dataset
    assert multi_node.device_spec(None, 'pure_nccl', '-1') == '-1'


SPIN_FOREVER = '''
import sys
sys.path.insert(0, {root!r})
import numba
from qnn.training import multi_node

@numba.njit(nogil=True)
def spin(n):
    # a C loop that holds no GIL and never returns, like a rank waiting in
    # a collective call for a partner that has left
    i = 0
    while n > 0:
        i += 1
    return i

spin(0)  # compiled before the signal
multi_node.exit_on_signals(None)
print('ready', flush=True)
spin(1)
'''


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_signal_ends_a_rank_blocked_outside_python(signum):
    proc = subprocess.Popen(
        [sys.executable, '-c', SPIN_FOREVER.format(root=ROOT)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, universal_newlines=True)
    try:
        assert proc.stdout.readline() == 'ready\n'
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, err
    assert err.startswith('train_mnist.py: stopped by {} under mpiexec'
                          .format(signal.Signals(signum).name)), err
    assert err.count('\n') == 1, err

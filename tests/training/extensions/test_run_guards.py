import io
import os
import signal
import subprocess
import sys
import time

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.links as L
from chainer import training

from qnn.datasets import mnist
from qnn.training.extensions import run_guards
from qnn.training.extensions import snapshots
from qnn.utils import errors
import train_mnist
import weight_clip

from helpers import ROOT
from helpers import SMALL
from helpers import files_in
from helpers import log_values
from helpers import make_trainer
from helpers import one_error_line
from helpers import read_log
from helpers import read_until_row
from helpers import start_slow_child


def at_iteration(iteration, action):
    """An extension that calls ``action(trainer)`` after the update of
    ``iteration``, before any writer (as a fault would strike)."""
    def extension(trainer):
        if trainer.updater.iteration == iteration:
            action(trainer)
    return extension


def poison_param(trainer, value=numpy.nan):
    trainer.updater.get_optimizer('main').target.predictor.b.array[1] = value


class TestFirstNonfiniteParam(object):

    def setup_method(self):
        self.link = chainer.Sequential(L.Linear(3, 2), L.Linear(2, 2))

    def test_finite(self):
        assert run_guards.first_nonfinite_param(self.link) is None

    @pytest.mark.parametrize('value, name', [(numpy.nan, 'nan'),
                                             (-numpy.inf, 'inf')])
    def test_names_the_parameter(self, value, name):
        self.link[1].W.array[0, 1] = value
        assert run_guards.first_nonfinite_param(self.link) == ('1/W', name)

    def test_overflowing_sum_of_finite_values(self):
        big = numpy.finfo(numpy.float32).max
        self.link[0].W.array[...] = big
        self.link[1].W.array[...] = big
        assert run_guards.first_nonfinite_param(self.link) is None


class TestDivergenceGuard(object):

    def run(self, tmp_path, fault, check_params=True):
        trainer = make_trainer(tmp_path)
        trainer.extend(run_guards.DivergenceGuard(check_params=check_params))
        trainer.extend(fault, priority=training.PRIORITY_WRITER + 2)
        snapshot = snapshots.AtomicSnapshot()
        trainer.extend(snapshot, trigger=(1, 'epoch'))
        trainer.extend(training.extensions.LogReport())
        with pytest.raises(run_guards.DivergenceError) as e:
            trainer.run(show_loop_exception_msg=False)
        return trainer, e.value

    @pytest.mark.parametrize('value', [numpy.nan, numpy.inf])
    def test_loss(self, tmp_path, value):
        def poison_loss(trainer):
            trainer.observation['main/loss'] = chainer.Variable(
                numpy.array(value, dtype=numpy.float32))
        trainer, e = self.run(tmp_path, at_iteration(6, poison_loss))
        assert str(e) == 'training diverged: main/loss is {} at epoch 2, ' \
            'iteration 6'.format(value)
        assert (e.epoch, e.iteration) == (2, 6)

    def test_parameter_at_the_end_of_an_epoch(self, tmp_path):
        # the loss of iteration 8 was computed before the bad update
        trainer, e = self.run(tmp_path, at_iteration(8, poison_param))
        assert str(e) == 'training diverged: parameter predictor/b became ' \
            'nan in the update at epoch 2, iteration 8'
        # neither the snapshot nor the log of epoch 2 was written
        assert files_in(tmp_path) == ['log', 'snapshot_iter_4']
        assert [entry['epoch'] for entry in
                trainer.get_extension('LogReport').log] == [1]

    def test_without_the_parameter_check(self, tmp_path):
        # the bad parameter shows in the next loss, one iteration late
        trainer, e = self.run(tmp_path, at_iteration(8, poison_param),
                              check_params=False)
        assert e.iteration == 9
        assert str(e).startswith('training diverged: main/loss is nan')
        assert 'snapshot_iter_8' in files_in(tmp_path)  # garbage saved

    def test_finite_run_is_left_alone(self, tmp_path):
        trainer = make_trainer(tmp_path)
        trainer.extend(run_guards.DivergenceGuard())
        trainer.run()
        assert trainer.updater.iteration == 16


def send(signum, times=1):
    def action(trainer):
        for _ in range(times):
            os.kill(os.getpid(), signum)
    return action


@pytest.mark.parametrize('signum, status', [(signal.SIGINT, 130),
                                            (signal.SIGTERM, 143)])
def test_signal_stops_after_the_iteration_with_a_snapshot(
        tmp_path, signum, status):
    trainer = make_trainer(tmp_path)
    snapshot = snapshots.AtomicSnapshot()
    trainer.extend(snapshot, trigger=(1, 'epoch'))
    seen = []
    # runs after the signal arrived: the iteration is finished
    trainer.extend(lambda t: seen.append(t.updater.iteration), priority=-1)
    guard = run_guards.InterruptGuard(snapshot, note=io.StringIO())
    trainer.extend(guard)
    trainer.extend(at_iteration(6, send(signum)),
                   priority=training.PRIORITY_WRITER)
    before = signal.getsignal(signum)
    with pytest.raises(run_guards.Interrupted) as e:
        with guard:
            trainer.run(show_loop_exception_msg=False)
    assert signal.getsignal(signum) is before
    assert (e.value.signum, e.value.status) == (signum, status)
    assert not e.value.at_once
    assert (e.value.iteration, e.value.epoch_detail) == (6, 1.5)
    assert e.value.snapshot == str(tmp_path / 'snapshot_iter_6')
    assert seen[-1] == 6
    assert files_in(tmp_path) == ['snapshot_iter_4', 'snapshot_iter_6']


def test_signal_at_the_end_of_an_epoch_writes_one_snapshot(tmp_path):
    trainer = make_trainer(tmp_path)
    snapshot = snapshots.AtomicSnapshot()
    trainer.extend(snapshot, trigger=(1, 'epoch'))
    guard = run_guards.InterruptGuard(snapshot, note=io.StringIO())
    trainer.extend(guard)
    trainer.extend(at_iteration(8, send(signal.SIGINT)))
    with pytest.raises(run_guards.Interrupted) as e:
        with guard:
            trainer.run(show_loop_exception_msg=False)
    assert e.value.snapshot == str(tmp_path / 'snapshot_iter_8')
    assert files_in(tmp_path) == ['snapshot_iter_4', 'snapshot_iter_8']


def test_first_signal_hands_the_second_to_the_system(tmp_path):
    # a Python handler would wait for a long computation to return
    trainer = make_trainer(tmp_path)
    guard = run_guards.InterruptGuard(snapshots.AtomicSnapshot(),
                                      note=io.StringIO())
    trainer.extend(guard)
    seen = []
    trainer.extend(at_iteration(6, send(signal.SIGINT)),
                   priority=training.PRIORITY_WRITER)
    trainer.extend(lambda t: seen.append(
        (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))
        if t.updater.iteration == 6 else None,
        priority=training.PRIORITY_WRITER - 1)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(run_guards.Interrupted) as e:
        with guard:
            trainer.run(show_loop_exception_msg=False)
    assert seen == [(signal.SIG_DFL, signal.SIG_DFL)]
    assert signal.getsignal(signal.SIGINT) is before
    assert not e.value.at_once and e.value.iteration == 6


def test_signal_before_training_stops_at_once(tmp_path):
    guard = run_guards.InterruptGuard(snapshots.AtomicSnapshot())
    with pytest.raises(run_guards.Interrupted) as e:
        with guard:
            os.kill(os.getpid(), signal.SIGTERM)
    assert e.value.at_once and e.value.iteration is None
    assert e.value.status == 143 and e.value.signal_name == 'SIGTERM'


def test_first_signal_prints_a_note(tmp_path):
    note = tmp_path / 'note'
    trainer = make_trainer(tmp_path / 'out')
    snapshot = snapshots.AtomicSnapshot()
    with open(str(note), 'w') as f:
        guard = run_guards.InterruptGuard(snapshot, note=f)
        trainer.extend(guard)
        trainer.extend(at_iteration(2, send(signal.SIGINT)))
        with pytest.raises(run_guards.Interrupted):
            with guard:
                trainer.run(show_loop_exception_msg=False)
    assert note.read_text() == (
        'SIGINT received: finishing this iteration, then writing a snapshot '
        '(press Ctrl-C again to stop at once)\n')


def test_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with run_guards.InterruptGuard(snapshots.AtomicSnapshot()):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
            os.kill(os.getpid(), signal.SIGINT)  # nothing happens
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# a child whose guard has seen one SIGTERM in training, then computes for
# a minute in numba code, holding the GIL: no Python handler or thread can
# run there until it returns
LONG_COMPUTATION = """
import os, signal
import numba
from qnn.training.extensions import run_guards
from qnn.training.extensions import snapshots

@numba.njit
def spin(n):
    s = 0
    for i in range(n):
        s = (s * 31 + i) % 1000003
    return s

spin(10)  # compiled before the clock starts
guard = run_guards.InterruptGuard(snapshots.AtomicSnapshot())
with guard:
    guard.initialize(object())  # a trainer has started
    os.kill(os.getpid(), signal.SIGTERM)  # the first: deferred
    print('computing', flush=True)
    spin(60 * 10 ** 9)
print('finished the computation')
"""


def test_second_signal_ends_a_long_computation():
    child = subprocess.Popen(
        [sys.executable, '-c', LONG_COMPUTATION], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True)
    assert child.stdout.readline() == 'computing\n'
    time.sleep(0.5)
    start = time.monotonic()
    child.send_signal(signal.SIGTERM)
    stdout, stderr = child.communicate(timeout=120)
    assert time.monotonic() - start < 5
    assert child.returncode == -signal.SIGTERM, stderr
    assert stdout == ''
    lines = stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith('SIGTERM received: finishing this iteration')


def _stop_inside(exception, **kwargs):
    snapshot = snapshots.AtomicSnapshot()
    with pytest.raises(SystemExit) as e:
        with run_guards.one_line_stops(snapshot, **kwargs):
            raise exception
    return e.value.code


def test_one_line_stops(capsys):
    diverged = run_guards.DivergenceError('main/loss is nan at epoch 2',
                                          2, 7)
    assert _stop_inside(diverged) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert 'main/loss is nan at epoch 2; stopped without saving anything ' \
        'of it; there is no snapshot of this run' in err
    # another rank of mpiexec stops with the same status, silently
    assert _stop_inside(diverged, is_root=False) == 3
    assert capsys.readouterr().err == ''
    assert _stop_inside(snapshots.SnapshotWriteError(
        'result/snapshot_iter_5: no space left')) == 1
    assert 'snapshot_iter_5: no space left' in capsys.readouterr().err
    # anything else is not a way of stopping: it goes through
    with pytest.raises(KeyError):
        with run_guards.one_line_stops(snapshots.AtomicSnapshot()):
            raise KeyError('x')


def test_one_line_stops_silences_overflow_only_when_checking(recwarn):
    with run_guards.one_line_stops(snapshots.AtomicSnapshot()):
        numpy.float32(1e38) * numpy.float32(10)
    assert not [w for w in recwarn if 'overflow' in str(w.message)]
    with run_guards.one_line_stops(snapshots.AtomicSnapshot(),
                                   divergence_check=False):
        numpy.float32(1e38) * numpy.float32(10)
    assert [w for w in recwarn if 'overflow' in str(w.message)]


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

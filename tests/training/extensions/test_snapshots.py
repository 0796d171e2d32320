import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import training

from qnn.training.extensions import snapshots
import train_mnist

from helpers import ROOT
from helpers import SMALL
from helpers import files_in
from helpers import log_values
from helpers import make_trainer
from helpers import one_error_line
from helpers import read_log
from helpers import run_files


def test_snapshot_name():
    assert snapshots.snapshot_name(1200) == 'snapshot_iter_1200'


def test_write_atomically_writes_a_loadable_file(tmp_path):
    path = str(tmp_path / 'snapshot_iter_0')
    snapshots.write_atomically(path, {'a': numpy.arange(3)})
    with numpy.load(path) as f:
        assert list(f['a']) == [0, 1, 2]
    assert files_in(tmp_path) == ['snapshot_iter_0']
    mask = os.umask(0o022)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize('error', [OSError, KeyboardInterrupt])
def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch, error):
    path = str(tmp_path / 'snapshot_iter_0')
    snapshots.write_atomically(path, {'a': numpy.arange(3)})
    real_save = snapshots.save_npz

    def save_half_then_fail(f, obj, compression=True):
        real_save(f, obj, compression)
        f.truncate(f.tell() // 2)
        raise error('disk full')

    monkeypatch.setattr(snapshots, 'save_npz', save_half_then_fail)
    with pytest.raises(error):
        snapshots.write_atomically(path, {'a': numpy.arange(1000)})
    with numpy.load(path) as f:
        assert list(f['a']) == [0, 1, 2]
    assert files_in(tmp_path) == ['snapshot_iter_0']  # no temporary left


def test_find_snapshots_newest_first(tmp_path):
    for name, mtime in [('snapshot_iter_30', 100), ('snapshot_iter_10', 300),
                        ('snapshot_iter_20', 200), ('snapshot_iter_x', 400),
                        ('.snapshot_iter_40.abc.tmp', 400), ('log', 400)]:
        (tmp_path / name).write_bytes(b'')
        os.utime(str(tmp_path / name), (mtime, mtime))
    (tmp_path / 'snapshot_iter_50').mkdir()
    found = snapshots.find_snapshots(str(tmp_path))
    # by time, not by number: a new run in an old directory starts low
    assert [os.path.basename(p) for p in found] == [
        'snapshot_iter_10', 'snapshot_iter_20', 'snapshot_iter_30']
    assert snapshots.find_snapshots(str(tmp_path / 'nowhere')) == []


def test_remove_temporaries(tmp_path):
    for name in ('.snapshot_iter_40.abc123.tmp', 'snapshot_iter_40', 'log',
                 '.other.tmp'):
        (tmp_path / name).write_bytes(b'x')
    snapshots.remove_temporaries(str(tmp_path))
    assert files_in(tmp_path) == ['.other.tmp', 'log', 'snapshot_iter_40']


def test_atomic_snapshot_keeps_the_newest(tmp_path):
    trainer = make_trainer(tmp_path)
    snapshot = snapshots.AtomicSnapshot(keep=2)
    trainer.extend(snapshot, trigger=(1, 'epoch'))
    (tmp_path / '.snapshot_iter_4.killed.tmp').write_bytes(b'PK')
    trainer.run()
    assert files_in(tmp_path) == ['snapshot_iter_12', 'snapshot_iter_16']
    assert snapshot.last_path == str(tmp_path / 'snapshot_iter_16')
    # a second request at the same iteration writes nothing new
    mtime = os.stat(snapshot.last_path).st_mtime_ns
    assert snapshot.write(trainer) == snapshot.last_path
    assert os.stat(snapshot.last_path).st_mtime_ns == mtime


def test_keep_must_be_positive():
    with pytest.raises(ValueError):
        snapshots.AtomicSnapshot(keep=0)


def test_random_state_goes_into_the_snapshot(tmp_path):
    numpy.random.seed(7)
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.extend(snapshots.AtomicSnapshot(), trigger=(1, 'epoch'))
    trainer.run()  # nothing draws after the snapshot at its end
    expected = numpy.random.rand(5)
    numpy.random.seed(8)
    chainer.serializers.load_npz(str(tmp_path / 'snapshot_iter_4'),
                                 make_trainer(tmp_path / 'new'))
    numpy.testing.assert_array_equal(numpy.random.rand(5), expected)


def test_resumed_trainer_repeats_the_uninterrupted_one(tmp_path):
    numpy.random.seed(0)
    whole = make_trainer(tmp_path / 'whole')
    whole.run()
    numpy.random.seed(0)
    first = make_trainer(tmp_path / 'parts', epochs=2)
    first.extend(snapshots.AtomicSnapshot(), trigger=(1, 'epoch'))
    first.run()
    numpy.random.seed(123)  # whatever happens in between
    second = make_trainer(tmp_path / 'parts', epochs=4)
    snapshots.load_snapshot(str(tmp_path / 'parts' / 'snapshot_iter_8'),
                            second)
    second.run()
    for a, b in zip(whole.updater.get_optimizer('main').target.params(),
                    second.updater.get_optimizer('main').target.params()):
        numpy.testing.assert_array_equal(a.array, b.array)


@pytest.fixture
def snapshot_file(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.extend(snapshots.AtomicSnapshot(), trigger=(1, 'epoch'))
    trainer.run()
    return tmp_path / 'snapshot_iter_4'


def damage(path, how):
    data = path.read_bytes()
    if how == 'truncated':
        path.write_bytes(data[:len(data) // 2])
    elif how == 'empty':
        path.write_bytes(b'')
    elif how == 'bit flip':
        with zipfile.ZipFile(str(path)) as archive:
            info = archive.getinfo('updater/model:main/predictor/W.npy')
        # inside the compressed data of that member
        at = info.header_offset + 30 + len(info.filename) + \
            info.compress_size // 2
        path.write_bytes(data[:at] + bytes([data[at] ^ 0xff]) +
                         data[at + 1:])
    elif how == 'text':
        path.write_text('this is not a snapshot')
    elif how == 'other npz':
        with open(str(path), 'wb') as f:
            numpy.savez(f, weights=numpy.zeros(3))


@pytest.mark.parametrize('how, message', [
    ('truncated', 'it is truncated or corrupted'),
    ('empty', 'it is not a snapshot (not an NPZ archive)'),
    ('bit flip', 'it is '),  # CRC or decompressor error, zlib's choice
    ('text', 'it is not a snapshot (not an NPZ archive)'),
    ('other npz', 'it is not a snapshot of a trainer'),
])
def test_damaged_snapshot_is_refused(tmp_path, snapshot_file, how, message):
    damage(snapshot_file, how)
    trainer = make_trainer(tmp_path / 'new')
    with pytest.raises(snapshots.SnapshotError) as e:
        snapshots.load_snapshot(str(snapshot_file), trainer)
    assert not isinstance(e.value, snapshots.SnapshotMismatch)
    assert str(e.value).startswith(message)
    if how == 'bit flip':
        assert 'corrupted' in str(e.value)
    assert trainer.updater.iteration == 0


def test_snapshot_of_another_shape_is_refused(tmp_path, snapshot_file):
    trainer = make_trainer(tmp_path / 'new', n_out=3)
    with pytest.raises(snapshots.SnapshotMismatch) as e:
        snapshots.load_snapshot(str(snapshot_file), trainer)
    assert str(e.value) == (
        'updater/model:main/predictor/W has shape (2, 4) in the snapshot but '
        '(3, 4) here: the network differs (--unit)')
    trainer = make_trainer(tmp_path / 'new', n_samples=25)
    with pytest.raises(snapshots.SnapshotMismatch) as e:
        snapshots.load_snapshot(str(snapshot_file), trainer)
    assert 'updater/iterator:main/order has shape (20,) in the snapshot ' \
        'but (25,) here' in str(e.value)


def test_snapshot_lacking_an_extension_is_refused(tmp_path, snapshot_file):
    trainer = make_trainer(tmp_path / 'new')
    trainer.extend(training.extensions.LogReport())
    with pytest.raises(snapshots.SnapshotMismatch) as e:
        snapshots.load_snapshot(str(snapshot_file), trainer)
    assert str(e.value).startswith('it has no extension')
    assert 'LogReport' in str(e.value)


def test_newest_valid_snapshot(tmp_path):
    trainer = make_trainer(tmp_path, epochs=3)
    trainer.extend(snapshots.AtomicSnapshot(), trigger=(1, 'epoch'))
    trainer.run()
    paths = [tmp_path / 'snapshot_iter_{}'.format(i) for i in (4, 8, 12)]
    for age, path in enumerate(reversed(paths)):
        os.utime(str(path), (1000 - age, 1000 - age))
    damage(paths[2], 'truncated')
    found, skipped = snapshots.newest_valid_snapshot(
        str(tmp_path), make_trainer(tmp_path / 'new'))
    assert found == str(paths[1])
    assert [p for p, _ in skipped] == [str(paths[2])]
    assert 'truncated' in skipped[0][1]
    with pytest.raises(snapshots.SnapshotMismatch) as e:
        snapshots.newest_valid_snapshot(
            str(tmp_path), make_trainer(tmp_path / 'new', n_out=3))
    assert e.value.path == str(paths[1])
    assert snapshots.newest_valid_snapshot(
        str(tmp_path / 'nowhere'), trainer) == (None, [])


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

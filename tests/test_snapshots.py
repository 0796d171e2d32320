import os
import zipfile

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.links as L
from chainer import training

from qnn.training.extensions import snapshots


def make_trainer(out, n_out=2, n_samples=20, epochs=4):
    """A small real trainer: a linear classifier on random data, 4
    iterations per epoch, with NumPy's random state in its snapshots."""
    rng = numpy.random.RandomState(0)
    x = rng.rand(n_samples, 4).astype(numpy.float32)
    t = (x.sum(axis=1) > 2).astype(numpy.int32)
    model = L.Classifier(L.Linear(4, n_out))
    optimizer = chainer.optimizers.Adam()
    optimizer.setup(model)
    iterator = chainer.iterators.SerialIterator(
        chainer.datasets.TupleDataset(x, t), 5)
    updater = training.updaters.StandardUpdater(iterator, optimizer)
    trainer = training.Trainer(updater, (epochs, 'epoch'), out=str(out))
    trainer.extend(snapshots.NumpyRandomState())
    return trainer


def files_in(directory):
    return sorted(os.listdir(str(directory)))


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

"""A snapshot whose array is a pickle runs no code in any reader.

The poisoned file is a real snapshot of train_mnist.py with one array,
``updater/model:main/predictor/l1/W``, replaced by an object array of the
same shape whose first element unpickles as a call of ``os.mkdir(MARKER)``:
what an attacker would hand a user. Each command that reads snapshots is
given it; the marker must never appear, the command must exit 1 with one
line naming the file and the key, and nothing may be written to ``--out``.
"""
import os
import shutil
import subprocess
import struct
import sys
import zipfile

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

from qnn.serializers import npz_arrays
from qnn.training import options as train_options
from qnn.training import splits
from qnn.training.extensions import snapshots
import train_mnist

from helpers import ROOT

KEY = 'updater/model:main/predictor/l1/W'
REASON = ('it holds a Python object at {}, not an array; a snapshot '
          'written by train_mnist.py never does'.format(KEY))
SMALL = ['--unit', '32', '--train-subset', '500', '--test-subset', '200',
         '--batchsize', '50', '--noplot']


class MakesDirectory(object):
    """Pickles as a call of ``os.mkdir(path)``: code a pickle would run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def poison(snapshot, path, marker):
    """Writes a copy of ``snapshot`` to ``path`` whose ``KEY`` is an object
    array with a :class:`MakesDirectory` of ``marker`` in it."""
    arrays = npz_arrays.read_arrays(str(snapshot))
    payload = numpy.empty(arrays[KEY].shape, dtype=object)
    payload[...] = 0.0
    payload.flat[0] = MakesDirectory(str(marker))
    arrays[KEY] = payload
    with open(str(path), 'wb') as f:
        numpy.savez(f, **arrays)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A finished 1-epoch run: its directory and its snapshot."""
    out = tmp_path_factory.mktemp('run')
    assert train_mnist.main(['--epoch', '1', '--out', str(out)] + SMALL) == 0
    return out, out / 'snapshot_iter_10'


def mpi_run(mpiexec, out, *args):
    env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1')
    return subprocess.run(
        [mpiexec, '-n', '2', sys.executable, 'train_mnist.py',
         '--communicator', 'naive', '--out', str(out)] + list(args) + SMALL,
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, universal_newlines=True, timeout=300,
        env=env)


@pytest.fixture(scope='module')
def mpi_snapshot(mpiexec, tmp_path_factory):
    """A finished 1-epoch run of 2 processes: its directory and its
    snapshot (which holds the extensions of a data-parallel run)."""
    out = tmp_path_factory.mktemp('mpi_run')
    proc = mpi_run(mpiexec, out, '--epoch', '1')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    snapshot, = out.glob('snapshot_iter_*')
    return out, snapshot


def poisoned_copy(run, tmp_path):
    out, snapshot = run
    directory = tmp_path / 'poisoned'
    directory.mkdir()
    shutil.copy(str(out / 'config.json'), str(directory))
    path = directory / snapshot.name
    marker = tmp_path / 'marker'
    poison(snapshot, path, marker)
    return path, marker


@pytest.fixture
def poisoned(run, tmp_path):
    """``(snapshot, marker)``: the poisoned copy, with the run's
    config.json beside it, and the directory it would create."""
    return poisoned_copy(run, tmp_path)


def run_command(*argv, **kwargs):
    return subprocess.run([sys.executable] + [str(a) for a in argv],
                          cwd=ROOT, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300, **kwargs)


def assert_refused(proc, prefix, marker):
    assert not marker.exists(), 'the payload ran'
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0] == prefix + REASON, lines[0]


def test_the_poison_is_live(poisoned, tmp_path):
    # read as Chainer's load_npz reads (allow_pickle=True), the file runs
    # its payload: so the tests below would see it if a reader did
    path, marker = poisoned
    with numpy.load(str(path), allow_pickle=True) as archive:
        archive[KEY]
    assert marker.is_dir()


def test_read_arrays_refuses_it_before_reading_anything(poisoned):
    path, marker = poisoned
    with pytest.raises(npz_arrays.PythonObjectInArchive) as e:
        npz_arrays.read_arrays(str(path), 'updater/iteration')
    assert e.value.key == KEY
    assert str(e.value) == REASON
    assert not marker.exists()


def test_read_arrays_reads_what_numpy_reads(run):
    _, snapshot = run
    arrays = npz_arrays.read_arrays(str(snapshot))
    with numpy.load(str(snapshot)) as archive:
        assert sorted(arrays) == sorted(archive.files)
        for key in archive.files:
            assert arrays[key].dtype == archive[key].dtype
            numpy.testing.assert_array_equal(arrays[key], archive[key])
    model = npz_arrays.read_arrays(str(snapshot), 'updater/model:')
    assert model and all(k.startswith('updater/model:') for k in model)


def test_loading_a_snapshot_restores_it_bit_for_bit(run):
    # load it into a fresh trainer of the same options, serialize that
    # again: the same arrays, bit for bit, as Chainer's load_npz gives
    out, snapshot = run
    trainers = []
    for load in (snapshots.load_snapshot, chainer.serializers.load_npz):
        args = train_options.parse_args(['--out', str(out)] + SMALL)
        trainer = chainer.training.Trainer(train_mnist.build_updater(
            args, splits.load_splits(args)[0],
            train_mnist.build_optimizer(args, train_mnist.build_model(args)),
            chainer.get_device('@numpy')), (1, 'epoch'))
        load(str(snapshot), trainer)
        serializer = chainer.serializers.DictionarySerializer()
        trainer.updater.serialize(serializer['updater'])
        trainers.append(serializer.target)
    ours, chainers = trainers
    assert sorted(ours) == sorted(chainers)
    saved = npz_arrays.read_arrays(str(snapshot), 'updater/')
    for key in ours:
        numpy.testing.assert_array_equal(ours[key], chainers[key])
        numpy.testing.assert_array_equal(ours[key], saved[key])


def test_resume(poisoned, tmp_path):
    path, marker = poisoned
    out = tmp_path / 'result'
    proc = run_command('train_mnist.py', '--resume', path, '--out', out,
                       '--epoch', '2', *SMALL)
    assert_refused(proc, 'train_mnist.py: error: cannot resume from {}: '
                   .format(path), marker)
    assert not out.exists()  # nothing written


def test_resume_auto(poisoned, tmp_path):
    # the newest snapshot in --out: refused, not skipped as damaged (an
    # older one would be resumed from instead of telling the user)
    path, marker = poisoned
    out = path.parent
    before = sorted(os.listdir(str(out)))
    proc = run_command('train_mnist.py', '--resume', 'auto', '--out', out,
                       '--epoch', '2', *SMALL)
    assert_refused(proc, 'train_mnist.py: error: cannot resume from {}: '
                   .format(path), marker)
    assert sorted(os.listdir(str(out))) == before


def test_resume_under_mpiexec(mpiexec, mpi_snapshot, tmp_path):
    path, marker = poisoned_copy(mpi_snapshot, tmp_path)
    out = tmp_path / 'result'
    proc = mpi_run(mpiexec, out, '--resume', path, '--epoch', '2')
    assert_refused(proc, 'train_mnist.py: error: cannot resume from {}: '
                   .format(path), marker)
    assert not out.exists()


def test_export(poisoned, tmp_path):
    path, marker = poisoned
    output = tmp_path / 'network.bnn'
    proc = run_command('export.py', path, '-o', output)
    assert_refused(proc, 'export.py: error: cannot export {}: '.format(path),
                   marker)
    assert not output.exists()


def test_bench_inference(run, poisoned, tmp_path):
    _, snapshot = run
    path, marker = poisoned
    packed = tmp_path / 'good.bnn'
    assert run_command('export.py', snapshot, '-o', packed).returncode == 0
    proc = run_command(os.path.join('bench', 'inference.py'), path, packed,
                       '--rounds', '1')
    assert_refused(proc, '{}: cannot load it: '.format(path), marker)


def test_bench_bn_statistics(poisoned):
    path, marker = poisoned
    proc = run_command(os.path.join('bench', 'bn_statistics.py'), path,
                       '--images', '100')
    assert proc.stdout.count('\n') == 2  # the table's header alone
    assert_refused(proc, '{}: cannot load it into the network of its '
                   'config.json: '.format(path), marker)


def many_members(path, members):
    with zipfile.ZipFile(path, 'w') as archive:
        for i in range(members):
            archive.writestr('m{}.npy'.format(i), b'')


def declares_members(path, members):
    """A ZIP archive whose ZIP64 end record declares ``members`` entries."""
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('a.npy', b'')
    data = bytearray(open(path, 'rb').read())
    end = data.rfind(b'PK\x05\x06')
    directory_bytes, directory_at = struct.unpack_from('<II', data, end + 12)
    record = (b'PK\x06\x06' + struct.pack('<QHHII', 44, 45, 45, 0, 0)
              + struct.pack('<QQQQ', members, members, directory_bytes,
                            directory_at))
    locator = b'PK\x06\x07' + struct.pack('<IQI', 0, end, 1)
    data[end + 8:end + 12] = struct.pack('<HH', 0xFFFF, 0xFFFF)
    open(path, 'wb').write(bytes(data[:end]) + record + locator
                           + bytes(data[end:]))


@pytest.mark.parametrize('make', [
    lambda path: many_members(path, npz_arrays.MAX_MEMBERS + 1),
    lambda path: declares_members(path, 10 ** 9)])
def test_a_directory_of_more_members_than_a_snapshot_is_refused_unread(
        make, tmp_path, monkeypatch):
    path = str(tmp_path / 'bomb.npz')
    make(path)

    def no_zipfile(*args, **kwargs):
        raise AssertionError('zipfile read the directory')
    monkeypatch.setattr(zipfile, 'ZipFile', no_zipfile)
    with pytest.raises(npz_arrays.ArchiveRefused, match='ZIP directory'):
        npz_arrays.open_archive(path)
    with open(path, 'rb') as f:
        with pytest.raises(npz_arrays.ArchiveRefused, match='ZIP directory'):
            npz_arrays.open_archive(f)


def test_the_directory_check_reads_a_zip64_end_record(tmp_path):
    path = str(tmp_path / 'small.npz')
    declares_members(path, 1)
    assert npz_arrays._directory_size(open(path, 'rb'))[0] == 1
    many_members(path, 3)
    assert npz_arrays._directory_size(open(path, 'rb'))[0] == 3
    assert npz_arrays.open_archive(path).namelist() == [
        'm0.npy', 'm1.npy', 'm2.npy']

"""Snapshots of a training run that a crash cannot spoil.

A snapshot is the trainer serialized with :func:`chainer.serializers.save_npz`
(model, optimizer state, iterator order and position, extension state) plus
NumPy's global random state (:class:`NumpyRandomState`), so that a run
resumed from it draws the same minibatches, and so logs the same values, as
the run that wrote it would have.

:class:`AtomicSnapshot` writes ``snapshot_iter_<iteration>`` into the
trainer's output directory through a temporary file in the same directory
that is flushed, ``fsync``-ed and then renamed over the final name
(:func:`write_atomically`): whenever the process dies, the name holds either
nothing or a complete snapshot, and the previous snapshots are untouched.
:func:`check_snapshot` tells, without loading anything, whether a file is a
complete snapshot that fits a given trainer, and says why not.
"""
import os
import re
import zipfile

import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer.serializers import npz
from chainer.training import extension

from qnn.serializers import npz_arrays
from qnn.utils import atomic_files
from qnn.utils import errors

# the writer's save function; a name of this module so that a test can slow
# it down and kill the process in the middle of a write
save_npz = npz.save_npz

_SNAPSHOT_NAME = re.compile(r'^snapshot_iter_(\d+)$')
# mkstemp(prefix='.snapshot_iter_N.', suffix='.tmp')
_TEMPORARY_NAME = re.compile(r'^\.snapshot_iter_\d+\..+\.tmp$')
_ZIP_MAGIC = b'PK\x03\x04'


class SnapshotError(Exception):
    """A snapshot file cannot be used; the message says why.

    ``path``, where set, is the file (for :func:`newest_valid_snapshot`).
    """
    path = None


class SnapshotMismatch(SnapshotError):
    """A complete snapshot that does not fit the trainer it is loaded into
    (another network size, training subset or set of extensions)."""


class SnapshotRefused(SnapshotError):
    """A file that holds a Python object (a pickle) where a snapshot holds
    arrays: reading it could run code, so it is never read."""


class SnapshotWriteError(SnapshotError):
    """A snapshot could not be written (no space, no permission); nothing
    of it is left behind."""


def is_snapshot_name(name):
    """Whether ``name`` is that of a snapshot (``snapshot_iter_N``)."""
    return _SNAPSHOT_NAME.match(name) is not None


def snapshot_name(iteration):
    """File name of the snapshot taken after ``iteration`` updates."""
    return 'snapshot_iter_{}'.format(iteration)


def write_atomically(path, obj):
    """Serializes ``obj`` into the NPZ file ``path``, all or nothing
    (:func:`qnn.utils.atomic_files.write_atomically`); the temporary file of a
    killed write, ``.snapshot_iter_N.*.tmp``, is deleted by
    :func:`remove_temporaries`."""
    atomic_files.write_atomically(path, lambda f: save_npz(f, obj))


def find_snapshots(directory):
    """Paths of the ``snapshot_iter_N`` files in ``directory``, newest first
    (by modification time, then by N); ``[]`` if there is no such directory.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        match = _SNAPSHOT_NAME.match(name)
        path = os.path.join(directory, name)
        if match and os.path.isfile(path):
            found.append((os.stat(path).st_mtime, int(match.group(1)), path))
    return [path for _, _, path in sorted(found, reverse=True)]


def remove_temporaries(directory):
    """Deletes what writes killed half-way left in ``directory``."""
    for name in os.listdir(directory):
        if _TEMPORARY_NAME.match(name):
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass


class AtomicSnapshot(extension.Extension):

    """Trainer extension that writes the trainer's state atomically.

    Each call writes ``snapshot_iter_<iteration>`` into ``trainer.out`` with
    :func:`write_atomically` and then deletes all but the ``keep`` newest
    snapshots there (by modification time: the directory is meant to hold
    one run). A snapshot is only ever deleted after a newer one is complete.
    Stale temporary files of killed writes are removed when training starts.

    Args:
        keep (int): Number of snapshots to keep (at least 1).

    Attributes:
        last_path (str): The newest snapshot of this run: the last one
            written, or the one it was resumed from (set by the caller);
            ``None`` if there is none.
    """
    trigger = 1, 'epoch'
    # after every other extension of the iteration (LogReport included), so
    # that the snapshot holds their state at its end; as Chainer's snapshot
    priority = -100

    def __init__(self, keep=3):
        if keep < 1:
            raise ValueError('keep must be at least 1, got {}'.format(keep))
        self.keep = keep
        self.last_path = None
        self._last_iteration = None

    def initialize(self, trainer):
        remove_temporaries(trainer.out)

    def __call__(self, trainer):
        self.write(trainer)

    def write(self, trainer):
        """Writes the snapshot of the current iteration unless this object
        already has, and returns its path."""
        iteration = trainer.updater.iteration
        path = os.path.join(trainer.out, snapshot_name(iteration))
        if self._last_iteration == iteration and self.last_path == path:
            return path
        try:
            write_atomically(path, trainer)
        except OSError as e:
            raise SnapshotWriteError(
                'cannot write the snapshot {}: {}; {}'.format(
                    path, e.strerror or e,
                    'the previous snapshot {} is intact'.format(
                        self.last_path) if self.last_path else
                    'there is no earlier snapshot of this run'))
        self.last_path = path
        self._last_iteration = iteration
        for old in find_snapshots(trainer.out)[self.keep:]:
            if old != path:
                os.remove(old)
        return path


class NumpyRandomState(extension.Extension):

    """Carries NumPy's global random state in the trainer's snapshots.

    :class:`chainer.iterators.SerialIterator` draws the order of each epoch
    from ``numpy.random``'s global generator (as may any other code on the
    CPU), so a resumed run repeats an uninterrupted one only if that state is
    restored too. The extension does nothing when called (it never is: its
    trigger never fires); :meth:`serialize` saves ``numpy.random.get_state()``
    and loading restores it with ``numpy.random.set_state``. CuPy's generator
    state is not included (CuPy cannot export it).
    """
    trigger = None  # never fires
    name = 'numpy_random_state'

    def __call__(self, trainer):
        pass

    def serialize(self, serializer):
        if isinstance(serializer, chainer.serializer.Serializer):
            kind, keys, position, has_gauss, gauss = numpy.random.get_state()
            serializer('keys', keys)
            serializer('position', position)
            serializer('has_gauss', has_gauss)
            serializer('cached_gaussian', gauss)
        else:
            keys = serializer('keys', None)
            position = serializer('position', 0)
            has_gauss = serializer('has_gauss', 0)
            gauss = serializer('cached_gaussian', 0.0)
            numpy.random.set_state(
                ('MT19937', numpy.asarray(keys, dtype=numpy.uint32),
                 position, has_gauss, gauss))


def _arrays_of(trainer):
    """What a snapshot of ``trainer`` holds: ``{key: array}``."""
    serializer = npz.DictionarySerializer()
    try:
        trainer.serialize(serializer)
    except RuntimeError:
        # Trainer.serialize ends with the elapsed time, which a trainer that
        # has not run yet lacks (Chainer 7); all the rest is in by then
        pass
    return serializer.target


def _hint(key):
    if key.startswith('updater/iterator:'):
        return ('the number of training images differs (--train-subset, '
                '--data-dir)')
    if key.startswith(('updater/model:', 'updater/optimizer:')):
        return 'the network differs (--unit)'
    if '/PlotReport' in key:
        return 'it was taken with --noplot (resume with --noplot)'
    return 'it was taken with other options'


def check_snapshot(path, trainer):
    """Raises :class:`SnapshotError` unless ``path`` is a complete snapshot
    that :func:`load_snapshot` can load into ``trainer``.

    Checks, in order: the file is a ZIP (NPZ) archive (a file that starts
    like one but cannot be opened is called truncated); every member's CRC
    matches (:meth:`zipfile.ZipFile.testzip`); no member holds Python
    objects (:class:`SnapshotRefused`, naming the first); it holds a
    trainer's iteration count; it has every array the trainer would load,
    each of the shape the trainer has. The last two raise
    :class:`SnapshotMismatch`, naming the first array missing or of another
    shape.
    """
    try:
        with open(path, 'rb') as f:
            head = f.read(len(_ZIP_MAGIC))
    except OSError as e:
        raise SnapshotError('cannot read it: {}'.format(e.strerror or e))
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            if damaged is not None:
                raise SnapshotError(
                    'it is corrupted ({} fails its CRC check)'.format(
                        damaged))
            found = npz_arrays.headers(archive)
            npz_arrays.refuse_objects(found)
    except npz_arrays.PythonObjectInArchive as e:
        raise SnapshotRefused(str(e))
    except SnapshotError:
        raise
    except Exception as e:  # zipfile, zlib and NumPy raise many types
        if head != _ZIP_MAGIC:
            raise SnapshotError('it is not a snapshot (not an NPZ archive)')
        raise SnapshotError('it is truncated or corrupted ({}: {})'.format(
            type(e).__name__, e))
    shapes = {key: shape for key, (shape, _) in found.items()}
    if 'updater/iteration' not in shapes:
        raise SnapshotError(
            'it is not a snapshot of a trainer (an NPZ archive without '
            'updater/iteration)')
    expected = _arrays_of(trainer)
    for key in sorted(expected):
        if key not in shapes:
            raise SnapshotMismatch(
                'it has no {}: {}'.format(key, _hint(key)))
        shape = numpy.shape(expected[key])
        if tuple(shapes[key]) != tuple(shape):
            raise SnapshotMismatch(
                '{} has shape {} in the snapshot but {} here: {}'.format(
                    key, tuple(shapes[key]), tuple(shape), _hint(key)))


def load_arrays(path, obj, prefix=''):
    """Loads the arrays of the NPZ file ``path`` under ``prefix`` into
    ``obj`` (a trainer, a model: anything :func:`chainer.serializers.
    load_npz` takes), with no pickle
    (:func:`qnn.serializers.npz_arrays.read_arrays`).

    Raises :class:`SnapshotRefused` for a file with a Python object in it,
    :class:`SnapshotError` for any other reason it cannot be loaded.
    """
    try:
        arrays = npz_arrays.read_arrays(path, prefix)
    except npz_arrays.PythonObjectInArchive as e:
        raise SnapshotRefused(str(e))
    except OSError as e:
        raise SnapshotError('cannot read it: {}'.format(e.strerror or e))
    except Exception as e:  # NumPy and zipfile raise many types
        raise SnapshotError('it is not a readable NPZ archive ({}: {})'.format(
            type(e).__name__, e))
    try:
        npz.NpzDeserializer(arrays, path=prefix).load(obj)
    except Exception as e:  # a missing key, another shape or dtype
        raise SnapshotError('it cannot be loaded ({}: {})'.format(
            type(e).__name__, e))


def load_snapshot(path, trainer):
    """Checks ``path`` with :func:`check_snapshot` and loads it into
    ``trainer``; raises :class:`SnapshotError` saying why it cannot."""
    check_snapshot(path, trainer)
    load_arrays(path, trainer)


def newest_valid_snapshot(directory, trainer):
    """Returns ``(path, skipped)``: the newest snapshot in ``directory`` that
    passes :func:`check_snapshot` (``None`` if there is none) and a list of
    ``(path, reason)`` for the newer ones that are damaged. A complete
    snapshot that does not fit the trainer is not skipped:
    :class:`SnapshotMismatch` is raised, since resuming from an older one,
    or from none, would silently throw that run away; so is
    :class:`SnapshotRefused` for a file with a Python object in it, which
    no damage makes.
    """
    skipped = []
    for path in find_snapshots(directory):
        try:
            check_snapshot(path, trainer)
        except (SnapshotMismatch, SnapshotRefused) as e:
            e.path = path
            raise
        except SnapshotError as e:
            skipped.append((path, str(e)))
            continue
        return path, skipped
    return None, skipped


def snapshot_trigger(frequency, last_epoch):
    """Fires at the end of every ``frequency``-th epoch (never if -1) and
    of epoch ``last_epoch``."""
    def due(trainer):
        updater = trainer.updater
        return updater.is_new_epoch and (
            frequency != -1 and updater.epoch % frequency == 0 or
            updater.epoch >= last_epoch)
    return due


def resume(trainer, path, out, snapshot):
    """Loads the snapshot ``path`` (``--resume``; ``'auto'``: the newest
    valid one in ``out``) into ``trainer``, or fails with one line. Returns
    the path loaded, ``None`` if ``'auto'`` found none."""
    if path == 'auto':
        try:
            path, skipped = newest_valid_snapshot(out, trainer)
        except SnapshotError as e:
            errors.fail('cannot resume from {}: {}'.format(e.path, e))
        for damaged, reason in skipped:
            errors.tell('skipping {}: {}'.format(damaged, reason))
        if path is None:
            print('# resume: no snapshot in {}, starting from the '
                  'beginning'.format(out))
            return None
    try:
        load_snapshot(path, trainer)
    except SnapshotError as e:
        errors.fail('cannot resume from {}: {}'.format(path, e))
    snapshot.last_path = path
    print('# resume: {} (iteration {}, epoch {})'.format(
        path, trainer.updater.iteration, trainer.updater.epoch))
    return path

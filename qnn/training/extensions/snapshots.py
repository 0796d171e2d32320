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
import copy
import json
import math
import os
import re

import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer.serializers import npz
from chainer.training import extension

from qnn.serializers import npz_arrays
from qnn.utils import atomic_files
from qnn.utils import errors
from qnn.utils import input_files

# the writer's save function; a name of this module so that a test can slow
# it down and kill the process in the middle of a write
save_npz = npz.save_npz

_SNAPSHOT_NAME = re.compile(r'^snapshot_iter_(\d+)$')
# mkstemp(prefix='.snapshot_iter_N.', suffix='.tmp')
_TEMPORARY_NAME = re.compile(r'^\.snapshot_iter_\d+\..+\.tmp$')
# a snapshot's text members (LogReport's log, as JSON) grow with the run:
# 64 MiB hold the log of some 40,000 epochs
_TEXT_BYTES = 1 << 26
# members a snapshot may hold beyond those a fresh trainer has (the
# report's statistics of each observed value, the state of extensions it
# runs without, such as PlotReport's), and their bytes at most
# (_TEXT_BYTES)
_EXTRA_MEMBERS = 256
# a stored dtype's kinds that stand for a trainer's value of a kind (a
# value not set yet, None, is an object: a number stands for it)
_KINDS = {'i': 'iu', 'u': 'iu', 'O': 'biuf'}


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


def snapshot_name(iteration):
    """File name of the snapshot taken after ``iteration`` updates."""
    return 'snapshot_iter_{}'.format(iteration)


def write_atomically(path, obj):
    """Serializes ``obj`` into the NPZ file ``path``, all or nothing
    (:func:`qnn.utils.atomic_files.write_atomically`); the temporary file of a
    killed write, ``.snapshot_iter_N.*.tmp``, is deleted by
    :func:`remove_temporaries`."""
    atomic_files.write_atomically(path, lambda f: save_npz(f, obj),
                                  run_output=True)


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


def _expected(obj, prefix=''):
    """``{key: numpy.ndarray}`` of what a snapshot holds for ``obj``; for a
    trainer, the states its optimizers make at their first update too."""
    expected = {prefix + key: numpy.asarray(value)
                for key, value in _arrays_of(obj).items()}
    if isinstance(obj, chainer.training.Trainer):
        expected.update(_optimizer_states(obj.updater, prefix + 'updater/'))
        # the elapsed time, which a trainer that has not run cannot say
        expected.setdefault(prefix + '_snapshot_elapsed_time',
                            numpy.zeros(()))
    return expected


def _optimizer_states(updater, prefix):
    """``{key: array}`` (arrays of the right shape and dtype that take no
    memory) of the per-parameter states that ``updater``'s optimizers have
    not made yet, as their :meth:`~chainer.UpdateRule.init_state` would
    make them (which a snapshot holds once the run has updated)."""
    states = {}
    for name, optimizer in sorted(updater.get_all_optimizers().items()):
        for path, param in optimizer.target.namedparams():
            rule = param.update_rule
            if rule is None or not rule.enabled or rule.state is not None \
                    or param.array is None:
                continue
            # what UpdateRule.serialize does to learn a state's names
            probe = copy.copy(rule)
            probe._state = {}
            probe.init_state(param)
            for key, value in probe._state.items():
                states['{}optimizer:{}{}/{}'.format(
                    prefix, name, path, key)] = numpy.broadcast_to(
                        numpy.zeros((), value.dtype), value.shape)
    return states


def _bound(expected):
    """The most bytes a member of a snapshot of these arrays may declare:
    the largest of them, or the text bound (the log grows with the run)."""
    return max([array.nbytes for array in expected.values()] +
               [_TEXT_BYTES])


def _same_kind(stored, expected):
    """Whether a member of dtype ``stored`` can stand for ``expected``:
    a float of that very dtype, an integer for an integer, a bool for a
    bool, text for text, a number for a value not set yet."""
    if expected.kind == 'f':
        return stored == expected
    return stored.kind in _KINDS.get(expected.kind, expected.kind)


def _check_members(archive, expected):
    """Raises unless the archive's members are those ``expected`` (a
    trainer's), each of its shape and dtype, and at most
    :data:`_EXTRA_MEMBERS` others of bounded size."""
    members = len(archive.infolist())
    if members > len(expected) + _EXTRA_MEMBERS:
        raise SnapshotError('it holds {} members where a snapshot of this '
                            'run holds {}'.format(members, len(expected)))
    found = npz_arrays.headers(archive)
    npz_arrays.check_sizes(archive, found, _bound(expected))
    npz_arrays.refuse_objects(found)
    extra = sum(math.prod(shape) * dtype.itemsize for key, (shape, dtype)
                in found.items() if key not in expected)
    if extra > _TEXT_BYTES:
        raise SnapshotError('it holds {} bytes of arrays that this run does '
                            'not have, more than {}'.format(extra,
                                                            _TEXT_BYTES))
    if 'updater/iteration' not in found:
        raise SnapshotError(
            'it is not a snapshot of a trainer (an NPZ archive without '
            'updater/iteration)')
    for key in sorted(expected):
        if key not in found:
            raise SnapshotMismatch(
                'it has no {}: {}'.format(key, _hint(key)))
        shape, dtype = found[key]
        if tuple(shape) != expected[key].shape:
            raise SnapshotMismatch(
                '{} has shape {} in the snapshot but {} here: {}'.format(
                    key, tuple(shape), expected[key].shape, _hint(key)))
        if not _same_kind(dtype, expected[key].dtype):
            raise SnapshotError('{} holds {} values ({}) where this run '
                                'has {}'.format(key, dtype.name, dtype.str,
                                                expected[key].dtype.name))


def check_snapshot(path, trainer):
    """Raises :class:`SnapshotError` unless ``path`` is a complete snapshot
    that :func:`load_snapshot` can load into ``trainer``.

    Checks, in order: the file is a regular file (no FIFO or device) and a
    ZIP (NPZ) archive (a file that starts like one but cannot be opened is
    called truncated); it has at most :data:`_EXTRA_MEMBERS` members more
    than the trainer would load; no member declares more bytes than the
    largest array of the trainer (or, for text, :data:`_TEXT_BYTES`),
    before any is decompressed; no member holds Python objects
    (:class:`SnapshotRefused`, naming the first); it holds a trainer's
    iteration count; it has every array the trainer would load, each of the
    shape the trainer has (:class:`SnapshotMismatch` otherwise, naming the
    first array missing or of another shape) and of its dtype; every
    member's CRC matches (:meth:`zipfile.ZipFile.testzip`).
    """
    try:
        with input_files.open_regular(path) as f:
            with npz_arrays.open_archive(f) as archive:
                _check_members(archive, _expected(trainer))
                damaged = archive.testzip()
    except npz_arrays.PythonObjectInArchive as e:
        raise SnapshotRefused(str(e))
    except SnapshotError:
        raise
    except Exception as e:  # zipfile, zlib and NumPy raise many types
        raise SnapshotError(npz_arrays.describe(e))
    if damaged is not None:
        raise SnapshotError(
            'it is corrupted ({} fails its CRC check)'.format(damaged))


def load_arrays(path, obj, prefix='', check=None):
    """Loads the arrays of the NPZ file ``path`` under ``prefix`` into
    ``obj`` (a trainer, a model: anything :func:`chainer.serializers.
    load_npz` takes), with no pickle
    (:func:`qnn.serializers.npz_arrays.read_arrays`): the members
    ``obj`` has (a trainer: all, as :func:`check_snapshot` bounds them),
    none declaring more bytes than the largest of them (or, for text,
    :data:`_TEXT_BYTES`); ``check(arrays)``, if given, may raise
    :class:`SnapshotError` before anything is loaded.

    Raises :class:`SnapshotRefused` for a file with a Python object in it,
    :class:`SnapshotError` for any other reason it cannot be loaded.
    """
    expected = _expected(obj, prefix)
    # a trainer's state has members that a fresh one lacks (the report's
    # statistics): check_snapshot bounds them
    keys = None if isinstance(obj, chainer.training.Trainer) else expected
    try:
        with input_files.open_regular(path) as f:
            arrays = npz_arrays.read_arrays(f, prefix, _bound(expected),
                                            keys=keys)
    except npz_arrays.PythonObjectInArchive as e:
        raise SnapshotRefused(str(e))
    except Exception as e:  # NumPy and zipfile raise many types
        raise SnapshotError(npz_arrays.describe(e))
    if check is not None:
        check(arrays)
    try:
        npz.NpzDeserializer(arrays, path=prefix).load(obj)
    except Exception as e:  # a missing key, another shape or dtype
        raise SnapshotError('it cannot be loaded ({}: {})'.format(
            type(e).__name__, e))


def check_state(arrays, trainer):
    """Raises :class:`SnapshotError` unless the values of a snapshot's
    ``arrays`` can be those of ``trainer``'s run: a non-negative
    iteration; the iterator's epoch, position inside the training set and
    order (a permutation of it); the model's parameters and batch
    normalization statistics finite, variances not negative; the log a
    JSON list of entries."""
    def value(key):
        return arrays['updater/' + key]

    size = len(trainer.updater.get_iterator('main').dataset)
    iterator = 'iterator:main/'
    if int(value('iteration')) < 0 or int(value(iterator + 'epoch')) < 0:
        raise SnapshotError('its iteration {} or epoch {} is negative'.format(
            int(value('iteration')), int(value(iterator + 'epoch'))))
    position = int(value(iterator + 'current_position'))
    if not 0 <= position < size:
        raise SnapshotError('its position in the training set, {}, is not '
                            'within the {} images'.format(position, size))
    order = arrays.get('updater/' + iterator + 'order')
    if order is not None and not numpy.array_equal(numpy.sort(order),
                                                   numpy.arange(size)):
        raise SnapshotError('its order of the training images is not a '
                            'permutation of the {} images'.format(size))
    for key, array in sorted(arrays.items()):
        if key.startswith('updater/model:') and array.dtype.kind == 'f' and \
                not (numpy.isfinite(array).all() and not (
                    key.endswith('/avg_var') and (array < 0).any())):
            raise SnapshotError('{} holds {}'.format(
                key, 'a negative variance' if numpy.isfinite(array).all()
                else 'NaN or infinite values'))
        if key.startswith('extensions/') and key.endswith('/_log'):
            _check_log(key, array)


def _check_log(key, array):
    try:
        log = json.loads(str(array))
    except (ValueError, RecursionError):
        log = None
    if type(log) is not list or not all(type(e) is dict for e in log):
        raise SnapshotError('{} is not a log (a JSON list of '
                            'entries)'.format(key))


def load_snapshot(path, trainer):
    """Checks ``path`` with :func:`check_snapshot` and
    :func:`check_state` and loads it into ``trainer``; raises
    :class:`SnapshotError` saying why it cannot."""
    check_snapshot(path, trainer)
    load_arrays(path, trainer, check=lambda arrays: check_state(arrays,
                                                                trainer))


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

"""Files written all or nothing, and never over what they must not replace:
snapshots, packed networks, ONNX models, predictions, config.json.

:func:`write_atomically` writes into a temporary file in the destination's
directory (a rename is atomic only within one file system), flushes and
``fsync``-s it, renames it over the destination with :func:`os.replace` and
``fsync``-s the directory, so that the rename outlives a power failure. If
writing fails or is interrupted (``KeyboardInterrupt`` included) the
temporary file is removed; if the process is killed it stays behind under a
hidden name, ``.NAME.*.tmp``, that the writer's owner may clean up later.
The file gets the permissions a plain ``open`` would give it.

A rename replaces whatever had the name, so before anything is written
:func:`check_output` refuses (:class:`RefusedOutput`, an ``OSError`` whose
``strerror`` says why) a destination that is

* not a regular file: a directory (or a name ending in ``/``), a FIFO, a
  device, a socket (a rename would put a regular file in its place);
* read-only (no write permission bit: mode 0444), which its owner meant to
  keep;
* a file the same command reads (``inputs``: the snapshot an export reads,
  the packed file inference runs), however it is named;
* a file of a training run's directory (a directory holding
  ``config.json`` or the run's ``.lock``): ``snapshot_iter_N``,
  ``config.json``, ``log`` and the other names of :data:`RUN_FILE`, unless
  the writer is that run itself (``run_output=True``).

The checks are made again just before the rename, so that a destination
replaced by a FIFO while the file was written is not clobbered either.
:func:`write_directory_atomically` writes a directory of files all or
nothing the same way.
"""
import errno
import os
import re
import shutil
import stat
import tempfile

from qnn.utils import input_files

# what train_mnist.py writes into its --out: config.json
# (qnn.training.run_history), the lock and its owner's pid
# (qnn.training.output_lock), the snapshots (qnn.training.extensions.
# snapshots), and the log, graph and plots of Chainer's extensions
RUN_FILE = re.compile(r'(config\.json|log|cg\.dot|loss\.png|accuracy\.png|'
                      r'\.lock|\.lock\.owner|snapshot_iter_-?\d+)\Z')
# the files whose presence makes a directory a run's
RUN_MARKERS = ('config.json', '.lock')


class RefusedOutput(OSError):
    """The destination is one that must not be replaced; ``strerror`` says
    why."""

    def __init__(self, path, reason):
        super(RefusedOutput, self).__init__(errno.EPERM, reason, path)


def is_run_directory(directory):
    """Whether ``directory`` holds a training run (its config.json or
    lock)."""
    return any(os.path.lexists(os.path.join(directory, name))
               for name in RUN_MARKERS)


def _same_file(status, path):
    try:
        other = os.stat(path)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (status.st_dev, status.st_ino)


def check_output(path, inputs=(), run_output=False):
    """Raises :class:`RefusedOutput` unless ``path`` may be written (see
    the module doc); ``inputs``: the paths the command reads;
    ``run_output``: the writer is the training run whose directory
    ``path`` is in."""
    if not path or path.endswith(('/', os.sep)):
        raise RefusedOutput(path, 'names a directory; name a file in it')
    directory = os.path.dirname(path) or '.'
    if not os.path.isdir(directory):
        raise RefusedOutput(path, '{} is not a directory{}'.format(
            directory, '' if os.path.lexists(directory) else
            ' (it does not exist)'))
    name = os.path.basename(path)
    if not run_output and RUN_FILE.match(name) and \
            is_run_directory(directory):
        raise RefusedOutput(
            path, 'it is a file of the training run in {} ({} holds the '
            'run\'s config.json or lock); write to another name or '
            'directory'.format(directory, directory))
    try:
        status = os.stat(path)
    except FileNotFoundError:  # a new file (or a dangling link)
        return
    except OSError as e:
        raise RefusedOutput(path, 'cannot look at it: {}'.format(
            e.strerror or e))
    if not stat.S_ISREG(status.st_mode):
        raise RefusedOutput(path, '{}; only a regular file is '
                            'replaced'.format(input_files.kind(
                                status.st_mode)))
    if not status.st_mode & 0o222:
        raise RefusedOutput(path, 'it is read-only (mode {:04o}); make it '
                            'writable or write to another file'.format(
                                stat.S_IMODE(status.st_mode)))
    for other in inputs:
        if _same_file(status, other):
            raise RefusedOutput(
                path, 'it is {}, which this command reads; write to '
                'another file'.format(other))


def write_atomically(path, write, inputs=(), run_output=False):
    """Calls ``write(f)`` on a binary file that becomes ``path`` only once
    it is complete; raises :class:`RefusedOutput` (``inputs`` and
    ``run_output`` as :func:`check_output`'s) before anything is written,
    and re-raises what ``write`` or the file system raised."""
    check_output(path, inputs, run_output)
    directory = os.path.dirname(path) or '.'
    fd, temporary = tempfile.mkstemp(
        dir=directory, prefix='.{}.'.format(os.path.basename(path)),
        suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        check_output(path, inputs, run_output)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. a platform that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_directory_atomically(path, files):
    """Creates the directory ``path`` holding ``files`` (name -> bytes) all
    or nothing: they are written into a temporary directory beside it,
    ``.NAME.*.tmp``, which is then renamed to ``path``. ``path`` may be
    missing or an empty directory (replaced by the rename); anything else
    there (a directory with files, a file, a link) raises
    ``FileExistsError`` before anything is written, so that no output
    replaces another's. Re-raises what the file system raises; the
    temporary directory is removed then."""
    path = os.path.normpath(path)
    if os.path.lexists(path) and (os.path.islink(path) or
                                  not os.path.isdir(path)):
        raise FileExistsError(errno.EEXIST, 'it exists and is not a '
                              'directory')
    if os.path.isdir(path) and os.listdir(path):
        raise FileExistsError(errno.ENOTEMPTY, 'a directory that is not '
                              'empty is there; choose another one or empty '
                              'it')
    parent = os.path.dirname(path) or '.'
    temporary = tempfile.mkdtemp(
        dir=parent, prefix='.{}.'.format(os.path.basename(path)),
        suffix='.tmp')
    try:
        for name, data in files.items():
            with open(os.path.join(temporary, name), 'xb') as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(temporary, 0o777 & ~_umask())
        _fsync_directory(temporary)
        # replaces an empty directory, fails on one filled meanwhile
        os.rename(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync_directory(parent)

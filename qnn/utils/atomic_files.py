"""Files written all or nothing: snapshots, packed networks, config.json.

:func:`write_atomically` writes into a temporary file in the destination's
directory (a rename is atomic only within one file system), flushes and
``fsync``-s it, renames it over the destination with :func:`os.replace` and
``fsync``-s the directory, so that the rename outlives a power failure. If
writing fails or is interrupted (``KeyboardInterrupt`` included) the
temporary file is removed; if the process is killed it stays behind under a
hidden name, ``.NAME.*.tmp``, that the writer's owner may clean up later.
The file gets the permissions a plain ``open`` would give it.
:func:`write_directory_atomically` does the same for a directory of files.
"""
import errno
import os
import shutil
import tempfile


def write_atomically(path, write):
    """Calls ``write(f)`` on a binary file that becomes ``path`` only once
    it is complete; re-raises what ``write`` or the file system raised."""
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

"""Files written all or nothing: snapshots, packed networks, config.json.

:func:`write_atomically` writes into a temporary file in the destination's
directory (a rename is atomic only within one file system), flushes and
``fsync``-s it, renames it over the destination with :func:`os.replace` and
``fsync``-s the directory, so that the rename outlives a power failure. If
writing fails or is interrupted (``KeyboardInterrupt`` included) the
temporary file is removed; if the process is killed it stays behind under a
hidden name, ``.NAME.*.tmp``, that the writer's owner may clean up later.
The file gets the permissions a plain ``open`` would give it.
"""
import os
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

"""Files a user hands in, opened so that no such file can hang or flood a
reader.

Every reader of a user's file (a packed network, a snapshot, config.json,
a data set's file) opens it with :func:`open_regular`: the file is opened
with ``O_NONBLOCK`` (opening a FIFO that no one writes to returns at once
instead of waiting for a writer) and refused unless ``fstat`` says it is a
regular file, so a FIFO, a device such as ``/dev/zero`` or a directory ends
in one line. :func:`read_bounded` reads such a file whole only if it is no
larger than what its format allows. The errors are :class:`OSError` s
(:class:`NotRegularFile`, :class:`TooLarge`) whose ``strerror`` is the
reason, so that a caller's ``except OSError as e: ... e.strerror`` names it.
"""
import errno
import json
import os
import stat

# st_mode file types -> what a message calls them
_KINDS = (
    (stat.S_ISDIR, 'a directory'),
    (stat.S_ISFIFO, 'a FIFO (named pipe)'),
    (stat.S_ISCHR, 'a character device'),
    (stat.S_ISBLK, 'a block device'),
    (stat.S_ISSOCK, 'a socket'),
)


def kind(mode):
    """What a file of ``st_mode`` ``mode`` is, for a message (``'a FIFO
    (named pipe)'``); ``'a regular file'`` for one."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return 'a regular file' if stat.S_ISREG(mode) else 'not a regular file'


class NotRegularFile(OSError):
    """The path names a FIFO, a device, a socket or a directory."""

    def __init__(self, path, mode):
        super(NotRegularFile, self).__init__(
            errno.EINVAL, '{}, not a regular file'.format(kind(mode)), path)


class TooLarge(OSError):
    """The file is larger than its format allows."""

    def __init__(self, path, size, limit, what):
        super(TooLarge, self).__init__(
            errno.EFBIG, '{} bytes, more than the {} bytes {} can '
            'be'.format(size, limit, what), path)


def open_regular(path):
    """Opens ``path`` for reading in binary mode; raises
    :class:`NotRegularFile` unless it is a regular file (symbolic links
    followed), or the ``OSError`` of ``open``."""
    flags = os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0) | \
        getattr(os, 'O_CLOEXEC', 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, mode)
        if flags & getattr(os, 'O_NONBLOCK', 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, 'rb')
    except BaseException:
        os.close(fd)
        raise


def size_of(f):
    """Bytes of the open regular file ``f``."""
    return os.fstat(f.fileno()).st_size


def read_bounded(path, limit, what='such a file'):
    """The bytes of the regular file ``path``; raises :class:`TooLarge`
    (``what`` says whose limit it is) if it holds more than ``limit``
    bytes, without reading them, and what :func:`open_regular` raises."""
    with open_regular(path) as f:
        size = size_of(f)
        if size > limit:
            raise TooLarge(path, size, limit, what)
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew while it was read
        raise TooLarge(path, len(data), limit, what)
    return data


def read_json(path, limit, what='such a file'):
    """The JSON value in the regular file ``path`` of at most ``limit``
    bytes (:func:`read_bounded`); raises ``ValueError`` for text that is
    not JSON (or nested too deep for the parser) and what
    :func:`read_bounded` raises."""
    text = read_bounded(path, limit, what)
    try:
        return json.loads(text.decode('utf-8'))
    except RecursionError:
        raise ValueError('its JSON is nested too deep')

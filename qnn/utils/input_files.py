"""Files a user hands in, read within bounds: a regular file only (a FIFO
or a device would block or never end), no more bytes than the format can
need, and JSON without unbounded nesting.

Every problem is an :class:`InputFileError` whose message says what is
wrong with the file (the caller names the file and the fix).
"""
import errno
import json
import os
import stat


class InputFileError(Exception):
    """The file cannot be taken; the message says why."""


def read_bounded(path, max_bytes):
    """The bytes of the regular file ``path``, refused (before reading
    them) if it holds more than ``max_bytes``."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise InputFileError(_reason(e))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError('not a regular file ({})'.format(
                _kind(info.st_mode)))
        if info.st_size > max_bytes:
            raise InputFileError('{} bytes, more than the {} such a file '
                                 'can hold'.format(info.st_size, max_bytes))
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b''.join(chunks)
    except OSError as e:
        raise InputFileError(_reason(e))
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # grew while read
        raise InputFileError('more than {} bytes'.format(max_bytes))
    return data


def read_json(path, max_bytes):
    """The JSON value in the regular file ``path`` of at most
    ``max_bytes``; nesting too deep for the parser is refused too."""
    data = read_bounded(path, max_bytes)
    try:
        return json.loads(data.decode('utf-8'))
    except RecursionError:
        raise InputFileError('JSON nested too deeply')
    except (UnicodeDecodeError, ValueError) as e:
        raise InputFileError('not JSON ({})'.format(e))


def _reason(error):
    if error.errno == errno.ENOENT:
        return 'no such file'
    if error.errno == errno.EISDIR:
        return 'a directory, not a file'
    return error.strerror or str(error)


def _kind(mode):
    for test, name in ((stat.S_ISDIR, 'a directory'), (stat.S_ISFIFO,
                       'a FIFO'), (stat.S_ISCHR, 'a character device'),
                       (stat.S_ISBLK, 'a block device'),
                       (stat.S_ISSOCK, 'a socket')):
        if test(mode):
            return name
    return 'a special file'

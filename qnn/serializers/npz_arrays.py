"""The arrays of an NPZ archive, read so that no code in the file can run
and no member can take more memory than its reader allows.

NumPy stores an array of Python objects in an ``.npy`` member as a pickle,
and unpickling can call any importable function: an archive with such a
member runs whatever its author chose the moment it is read with
``allow_pickle=True``, which is what :func:`chainer.serializers.load_npz`
passes. A snapshot is a file users hand each other, so every reader in this
project goes through :func:`read_arrays` instead: it opens the file as a ZIP
archive (a file that is none is :class:`NotAnArchive`, never handed to
NumPy's pickle fallback), looks at each member's ``.npy`` header first,
refuses an object array by name (:class:`PythonObjectInArchive`), a member
whose declared shape times its item size exceeds the reader's bound before
decompressing it (:class:`MemberTooLarge`: a zip bomb costs nothing), and a
member of a dtype the reader cannot use (:class:`WrongDtype`), and then
loads the arrays with ``allow_pickle=False``. The result is a plain ``{key:
numpy.ndarray}`` mapping, which :class:`chainer.serializers.
NpzDeserializer` takes in place of an open archive.

Every way reading an archive can fail becomes one line through
:func:`describe`, for ``export.py`` and ``train_mnist.py --resume`` alike.
A caller opens a user's file with :func:`qnn.utils.input_files.
open_regular` (no FIFO or device) and passes the open file.
"""
import io
import math
import struct
import zipfile

import numpy

_ZIP_MAGIC = b'PK\x03\x04'
# the end of the central directory: its record and where a ZIP64 one is
_END = b'PK\x05\x06'
_END_BYTES = 22
_ZIP64_LOCATOR = b'PK\x06\x07'
_ZIP64_END = b'PK\x06\x06'
# zipfile holds every member's entry in memory before anything can be
# checked: a snapshot has a few hundred members, a bomb could claim
# millions
MAX_MEMBERS = 65535
MAX_DIRECTORY_BYTES = 16 << 20
_NPY_MAGIC = b'\x93NUMPY'
# what a member's ZIP entry may hold beyond its array: the .npy header
# (NumPy writes a few hundred bytes for any shape)
_HEADER_BYTES = 1 << 16
# real floats a model's parameters may be stored as
FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


class ArchiveRefused(ValueError):
    """The archive, or one of its members, is not one this reader takes;
    the message says why."""


class NotAnArchive(ArchiveRefused):
    """The file is no ZIP archive at all (text, an empty file, a pickle)."""

    def __init__(self):
        super(NotAnArchive, self).__init__(
            'it is not a snapshot (not an NPZ archive)')


class PythonObjectInArchive(ArchiveRefused):
    """An NPZ member holds Python objects (a pickle), not numbers or text.

    ``key`` is the member's name without ``.npy``.
    """

    def __init__(self, key):
        super(PythonObjectInArchive, self).__init__(
            'it holds a Python object at {}, not an array; a snapshot '
            'written by train_mnist.py never does'.format(key))
        self.key = key


class MemberTooLarge(ArchiveRefused):
    """A member declares more bytes than its reader allows."""


class WrongDtype(ArchiveRefused):
    """A member holds values of a dtype its reader cannot use."""


def read_header(stream):
    """``(shape, dtype)`` from the ``.npy`` header at the start of
    ``stream``; nothing after the header is read, and a header that says it
    is longer than 64 KiB is refused before it is read (NumPy's reader
    would read it whole first)."""
    prefix = stream.read(10)  # magic, version, a 2-byte length
    if len(prefix) < 10 or not prefix.startswith(_NPY_MAGIC):
        raise ValueError('a member is no .npy array (it starts with '
                         '{!r})'.format(prefix[:6]))
    if prefix[6] == 1:
        length = int.from_bytes(prefix[8:10], 'little')
    else:  # versions 2 and 3: a 4-byte length
        prefix += stream.read(2)
        length = int.from_bytes(prefix[8:12], 'little')
    if length > _HEADER_BYTES:
        raise MemberTooLarge('a member\'s .npy header says it is {} bytes '
                             'long, more than {}'.format(length,
                                                         _HEADER_BYTES))
    header = io.BytesIO(prefix + stream.read(length))
    version = numpy.lib.format.read_magic(header)
    if version == (1, 0):
        shape, _, dtype = numpy.lib.format.read_array_header_1_0(header)
    else:
        shape, _, dtype = numpy.lib.format.read_array_header_2_0(header)
    return shape, dtype


def _directory_size(stream):
    """``(members, bytes)`` of the central directory that the end of the
    ZIP archive ``stream`` declares, or None where it declares none (then
    :mod:`zipfile` refuses the file without reading a directory)."""
    stream.seek(0, io.SEEK_END)
    size = stream.tell()
    stream.seek(max(0, size - _END_BYTES - 0xFFFF))  # record and comment
    tail = stream.read()
    at = tail.rfind(_END)
    if at < 0 or len(tail) - at < _END_BYTES:
        return None
    members, directory_bytes = struct.unpack_from('<HI', tail, at + 10)
    if members == 0xFFFF or directory_bytes == 0xFFFFFFFF:
        locator = at - 20
        if locator < 0 or tail[locator:locator + 4] != _ZIP64_LOCATOR:
            return None
        offset, = struct.unpack_from('<Q', tail, locator + 8)
        stream.seek(offset)
        record = stream.read(56)
        if len(record) < 56 or not record.startswith(_ZIP64_END):
            return None
        members, directory_bytes = struct.unpack_from('<QQ', record, 32)
    return members, directory_bytes


def _check_directory(file):
    if hasattr(file, 'seek'):
        found = _directory_size(file)
        file.seek(0)
    else:
        with open(file, 'rb') as stream:
            found = _directory_size(stream)
    if found is not None and (found[0] > MAX_MEMBERS
                              or found[1] > MAX_DIRECTORY_BYTES):
        raise ArchiveRefused(
            'its ZIP directory declares {} members in {} bytes; a snapshot '
            'has at most {} members'.format(found[0], found[1], MAX_MEMBERS))


def open_archive(file):
    """The :class:`zipfile.ZipFile` of ``file`` (a path or an open binary
    file); raises :class:`NotAnArchive` for a file that does not even start
    like one, :class:`ArchiveRefused` for one whose directory declares more
    members or bytes than a snapshot has (before :mod:`zipfile` would hold
    them all in memory), :class:`zipfile.BadZipFile` for a damaged one."""
    try:
        _check_directory(file)
        return zipfile.ZipFile(file)
    except zipfile.BadZipFile:
        if hasattr(file, 'seek'):
            file.seek(0)
            head = file.read(len(_ZIP_MAGIC))
        else:
            with open(file, 'rb') as f:
                head = f.read(len(_ZIP_MAGIC))
        if head != _ZIP_MAGIC:
            raise NotAnArchive()
        raise


def _member_bytes(shape, dtype):
    return math.prod(shape) * dtype.itemsize


def headers(archive):
    """``{key: (shape, dtype)}`` of each array of the open
    :class:`zipfile.ZipFile` ``archive``, from the headers alone (each at
    most 64 KiB: :func:`read_header`)."""
    found = {}
    for info in archive.infolist():
        if info.filename.endswith('.npy'):
            with archive.open(info) as stream:
                found[info.filename[:-len('.npy')]] = read_header(stream)
    return found


def check_sizes(archive, found, max_bytes, keys=None):
    """Raises :class:`MemberTooLarge` for the first member of ``archive``
    (of ``keys`` only, if given) whose uncompressed size in the archive's
    directory, or whose declared shape times its item size (``found``:
    :func:`headers`), is larger than ``max_bytes``: before anything past
    its header is decompressed."""
    for info in archive.infolist():
        key = info.filename[:-len('.npy')] if info.filename.endswith(
            '.npy') else None
        if keys is not None and key not in keys:
            continue
        if info.file_size > max_bytes + _HEADER_BYTES:
            raise MemberTooLarge(
                'its member {} is {} bytes uncompressed, more than the {} '
                'its reader allows'.format(info.filename, info.file_size,
                                           max_bytes))
        nbytes = _member_bytes(*found[key]) if key in found else 0
        if nbytes > max_bytes:
            raise MemberTooLarge(
                'it declares {} of shape {} ({} bytes), more than the {} '
                'bytes its reader allows'.format(
                    key, tuple(found[key][0]), nbytes, max_bytes))


def refuse_objects(found):
    """Raises :class:`PythonObjectInArchive` for the first key (in sorted
    order) of ``{key: (shape, dtype)}`` whose dtype holds Python objects."""
    for key in sorted(found):
        if found[key][1].hasobject:
            raise PythonObjectInArchive(key)


def require_dtypes(found, keys, dtypes, what):
    """Raises :class:`WrongDtype` for the first of ``keys`` (sorted) in
    ``{key: (shape, dtype)}`` whose dtype is not one of ``dtypes``;
    ``what`` names them in the message (``'float32 or float64'``)."""
    for key in sorted(keys):
        if key in found and found[key][1] not in dtypes:
            raise WrongDtype('{} holds {} values ({}), not {}'.format(
                key, found[key][1].name, found[key][1].str, what))


def read_arrays(file, prefix='', max_bytes=None, floats=(), keys=None):
    """``{key: numpy.ndarray}`` of the arrays of the NPZ file ``file`` (a
    path or an open binary file) whose keys start with ``prefix`` (all by
    default; keys keep the prefix) and, with ``keys``, are among them (the
    others are never decompressed).

    Raises, before any array is loaded: :class:`NotAnArchive`;
    :class:`PythonObjectInArchive` if any member is an object array;
    :class:`MemberTooLarge` for a member to read larger than ``max_bytes``
    (:func:`check_sizes`; the others are never decompressed);
    :class:`WrongDtype` if a member read whose
    key ends in one of ``floats`` (``'/W'``) is not float32 or float64.
    Whatever NumPy, :mod:`zipfile` or :mod:`zlib` raise for a damaged
    archive otherwise (:func:`describe` says it in one line).
    """
    with open_archive(file) as archive:
        found = headers(archive)
        refuse_objects(found)
        wanted = [key for key in found if key.startswith(prefix) and (
            keys is None or key in keys)]
        if max_bytes is not None:
            check_sizes(archive, found, max_bytes, wanted)
        require_dtypes(found, [key for key in wanted if key.endswith(
            tuple(floats))] if floats else (), FLOATS, 'float32 or float64')
        arrays = {}
        for key in wanted:
            with archive.open(key + '.npy') as stream:
                arrays[key] = numpy.lib.format.read_array(
                    stream, allow_pickle=False)
        return arrays


def describe(error):
    """The one-line reason of ``error``, raised while an NPZ archive was
    opened or read, that follows "cannot use FILE: "."""
    if isinstance(error, ArchiveRefused):
        return str(error)
    if isinstance(error, OSError):
        return 'cannot read it: {}'.format(error.strerror or error)
    text = ' '.join(str(error).split())
    return 'it is truncated or corrupted ({}: {})'.format(
        type(error).__name__, text if len(text) <= 200 else
        text[:197] + '...')

"""The arrays of an NPZ archive, read so that no code in the file can run.

NumPy stores an array of Python objects in an ``.npy`` member as a pickle,
and unpickling can call any importable function: an archive with such a
member runs whatever its author chose the moment it is read with
``allow_pickle=True``, which is what :func:`chainer.serializers.load_npz`
passes. A snapshot is a file users hand each other, so every reader in this
project goes through :func:`read_arrays` instead: it looks at each member's
``.npy`` header first, refuses an object array by name
(:class:`PythonObjectInArchive`), and then loads the arrays with
``allow_pickle=False``. The result is a plain ``{key: numpy.ndarray}``
mapping, which :class:`chainer.serializers.NpzDeserializer` takes in place
of an open archive.
"""
import numpy


class PythonObjectInArchive(ValueError):
    """An NPZ member holds Python objects (a pickle), not numbers or text.

    ``key`` is the member's name without ``.npy``.
    """

    def __init__(self, key):
        super(PythonObjectInArchive, self).__init__(
            'it holds a Python object at {}, not an array; a snapshot '
            'written by train_mnist.py never does'.format(key))
        self.key = key


def read_header(stream):
    """``(shape, dtype)`` from the ``.npy`` header at the start of
    ``stream``; nothing after the header is read."""
    version = numpy.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = numpy.lib.format.read_array_header_1_0(stream)
    else:
        shape, _, dtype = numpy.lib.format.read_array_header_2_0(stream)
    return shape, dtype


def headers(archive):
    """``{key: (shape, dtype)}`` of each array of the open
    :class:`zipfile.ZipFile` ``archive``, from the headers alone."""
    found = {}
    for member in archive.namelist():
        if member.endswith('.npy'):
            with archive.open(member) as stream:
                found[member[:-len('.npy')]] = read_header(stream)
    return found


def refuse_objects(found):
    """Raises :class:`PythonObjectInArchive` for the first key (in sorted
    order) of ``{key: (shape, dtype)}`` whose dtype holds Python objects."""
    for key in sorted(found):
        if found[key][1].hasobject:
            raise PythonObjectInArchive(key)


def read_arrays(path, prefix=''):
    """``{key: numpy.ndarray}`` of the arrays of the NPZ file ``path`` whose
    keys start with ``prefix`` (all by default; keys keep the prefix).

    Raises :class:`PythonObjectInArchive` if any member of the file, read or
    not, is an object array, before any array is loaded; whatever NumPy or
    :mod:`zipfile` raise for a file that is no NPZ archive otherwise.
    """
    with numpy.load(path, allow_pickle=False) as archive:
        refuse_objects(headers(archive.zip))
        return {key: archive[key] for key in archive.files
                if key.startswith(prefix)}

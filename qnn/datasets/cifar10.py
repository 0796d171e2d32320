"""CIFAR-10 (Krizhevsky 2009) from the official Python batches; no download.

The "CIFAR-10 python version" of https://www.cs.toronto.edu/~kriz/cifar.html
(``cifar-10-python.tar.gz``) unpacks into ``cifar-10-batches-py/``:

* ``data_batch_1`` ... ``data_batch_5`` (training) and ``test_batch``: each
  a pickle (protocol 2, written by Python 2) of a dict with byte-string keys:
  ``b'data'``, a ``numpy.uint8`` array of 10000 rows of 3072 pixels (1024
  red, then 1024 green, then 1024 blue, each a 32x32 image row by row, so a
  row reshapes to ``(3, 32, 32)``), ``b'labels'``, a list of 10000 ints in
  0..9, and ``b'batch_label'`` and ``b'filenames'``, not used here;
* ``batches.meta`` (class names) and ``readme.html``, not read.

``data_dir`` may be that directory or the one holding it. The files cannot
be shipped with this repository nor downloaded by it.

A pickle can make its reader call any importable function, so the batches
are read by :class:`RestrictedUnpickler`, which resolves only the three
names the official files refer to (NumPy's array reconstruction, ndarray and
dtype) and refuses any other before anything is called. The content is then
checked: keys, dtype, 3072 columns, as many labels as rows, labels in 0..9,
:data:`ROWS_PER_BATCH` rows per file, no two files with the same images, and
classes balanced as CIFAR-10's are (exactly 5000 training and 1000 test
images of each). There is no hash of the files to compare with: they were
not available to compute one.
"""
import hashlib
import io
import os
import pickle

import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

from qnn.datasets import files

SUBDIR = 'cifar-10-batches-py'
TRAIN_BATCHES = tuple('data_batch_{}'.format(i) for i in range(1, 6))
TEST_BATCH = 'test_batch'

# Rows of each official batch file. Tests that write small batches in the
# official format pass their own count (rows_per_batch) instead.
ROWS_PER_BATCH = 10000
N_CLASSES = 10
# The shape of one image: (channels, height, width).
SHAPE = (3, 32, 32)
_PIXELS = 3 * 32 * 32

_WHERE = ('get "CIFAR-10 python version" (cifar-10-python.tar.gz) from the '
          'University of Toronto\'s CIFAR-10 page, '
          'https://www.cs.toronto.edu/~kriz/cifar.html, unpack it with '
          '`tar xzf cifar-10-python.tar.gz` and pass --data-dir DIR (DIR or '
          'DIR/{})'.format(SUBDIR))
_REPLACE = ('replace it with the file of that name from the official '
            'cifar-10-python.tar.gz')


def _reconstruct():
    # The function NumPy pickles arrays with (numpy.core.multiarray.
    # _reconstruct in NumPy 1, numpy._core.multiarray in 2), taken from
    # ndarray itself so as not to import a deprecated module path.
    return numpy.ndarray.__reduce__(numpy.empty(0, numpy.uint8))[0]


# (module, name) -> object: all the globals the official files refer to,
# under the names NumPy 1 on Python 2 wrote them with.
ALLOWED_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'): _reconstruct(),
    ('numpy', 'ndarray'): numpy.ndarray,
    ('numpy', 'dtype'): numpy.dtype,
}


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle refers to a global that :data:`ALLOWED_GLOBALS` lacks."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only NumPy arrays and plain data.

    :meth:`find_class` is the only way a pickle reaches a callable (its
    GLOBAL and STACK_GLOBAL opcodes, and the copyreg extension codes, all go
    through it); anything outside :data:`ALLOWED_GLOBALS` raises
    :class:`ForbiddenGlobal` before it could be called. Persistent IDs are
    refused by :class:`pickle.Unpickler` already.
    """

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[module, name]
        except KeyError:
            raise ForbiddenGlobal('{}.{}'.format(module, name))


def _unpickle(path, rows=ROWS_PER_BATCH):
    """Returns the object pickled in ``path``, a batch of ``rows`` images,
    read as the official files are meant to be read in Python 3
    (``encoding='bytes'``)."""
    # the pixels, and labels and file names of some 30 bytes each
    content = files.read_content(path, _REPLACE,
                                 rows * (_PIXELS + 256) + (1 << 20))
    stream = io.BytesIO(content)
    try:
        obj = RestrictedUnpickler(stream, encoding='bytes').load()
    except ForbiddenGlobal as e:
        raise files.DatasetError(
            '{}: refused to unpickle it: it refers to {}, which no CIFAR-10 '
            'file does (they hold only NumPy arrays and plain data), and '
            'unpickling it could run code; {}'.format(path, e, _REPLACE))
    except Exception as e:  # a damaged pickle fails in many ways
        raise files.DatasetError(
            '{}: not a CIFAR-10 batch (unpickling failed: {}: {}); {}'.format(
                path, type(e).__name__, e, _REPLACE))
    if stream.tell() != len(content):
        raise files.DatasetError(
            '{}: not a CIFAR-10 batch ({} bytes after the end of the '
            'pickle); {}'.format(path, len(content) - stream.tell(),
                                 _REPLACE))
    return obj


def _check_batch(obj, path, rows):
    """Returns ``(images, labels)`` of an unpickled batch, both uint8."""
    def fail(what):
        raise files.DatasetError(
            '{}: not a CIFAR-10 batch ({}); {}'.format(path, what, _REPLACE))

    if not isinstance(obj, dict):
        fail('it holds a {} where a batch is a dict'.format(
            type(obj).__name__))
    for key in (b'data', b'labels'):
        if key not in obj:
            fail('no {!r} key; keys: {}'.format(
                key, ', '.join(sorted(repr(k) for k in obj))[:200]))
    images, labels = obj[b'data'], obj[b'labels']
    if not isinstance(images, numpy.ndarray):
        fail("b'data' is a {}, not a NumPy array".format(
            type(images).__name__))
    if images.dtype != numpy.uint8 or images.ndim != 2 or \
            images.shape[1] != _PIXELS:
        fail("b'data' is {} of shape {}, not uint8 rows of {} pixels".format(
            images.dtype, images.shape, _PIXELS))
    if images.shape[0] != rows:
        fail("b'data' has {} rows, not {}".format(images.shape[0], rows))
    if not isinstance(labels, list) or not all(
            type(label) is int for label in labels):
        fail("b'labels' is not a list of ints")
    if len(labels) != rows:
        fail("{} labels for {} images".format(len(labels), rows))
    labels = numpy.array(labels, dtype=numpy.int64)
    if rows and not (0 <= labels.min() and labels.max() < N_CLASSES):
        fail('labels range from {} to {}, not within 0..{}'.format(
            labels.min(), labels.max(), N_CLASSES - 1))
    return images, labels.astype(numpy.uint8)


def _check_balanced(labels, directory, what):
    counts = numpy.bincount(labels, minlength=N_CLASSES)
    if len(labels) % N_CLASSES or (counts != len(labels) // N_CLASSES).any():
        raise files.DatasetError(
            '{}: not CIFAR-10 (the {} hold {} images per class where '
            'CIFAR-10 has the same number of each, {}); {}'.format(
                directory, what, counts.tolist(), len(labels) // N_CLASSES,
                'replace them with the files of the official '
                'cifar-10-python.tar.gz'))


def batch_directory(data_dir):
    """Returns the directory of the batches: ``data_dir`` if it holds
    ``data_batch_1``, else ``data_dir/cifar-10-batches-py`` if that is a
    directory. Raises :class:`qnn.datasets.files.DatasetError` if neither."""
    if data_dir is None:
        raise files.DatasetError(
            'CIFAR-10: no data directory given (this program does not '
            'download the files); ' + _WHERE)
    if os.path.isfile(data_dir):
        raise files.DatasetError(
            '{}: a file, not a directory of CIFAR-10 batches; {}'.format(
                data_dir, _WHERE))
    if not os.path.isdir(data_dir):
        raise files.DatasetError(
            '{}: no such directory, CIFAR-10 is not there; {}'.format(
                data_dir, _WHERE))
    if not os.path.exists(os.path.join(data_dir, TRAIN_BATCHES[0])):
        sub = os.path.join(data_dir, SUBDIR)
        if os.path.isdir(sub):
            return sub
    return data_dir


def load_raw(data_dir, rows_per_batch=None):
    """Returns ``{'train': (images, labels), 'test': (images, labels)}``.

    Images are ``uint8`` arrays of shape ``(n, 3072)`` (rows as in the
    files, see the module doc), labels ``uint8`` of shape ``(n,)``.

    Args:
        data_dir (str): ``cifar-10-batches-py`` or the directory holding it.
        rows_per_batch (int): Rows expected in each of the six files;
            ``None`` is :data:`ROWS_PER_BATCH`, that of the official files
            (so 50000 training and 10000 test images).

    Raises :class:`qnn.datasets.files.DatasetError` for a missing or wrong
    file.
    """
    if rows_per_batch is None:
        rows_per_batch = ROWS_PER_BATCH
    directory = batch_directory(data_dir)
    # a FIFO or a device is there, and refused when it is read
    missing = [name for name in TRAIN_BATCHES + (TEST_BATCH,)
               if not os.path.lexists(os.path.join(directory, name))]
    if missing:
        tarball = os.path.join(directory, 'cifar-10-python.tar.gz')
        fix = ('unpack it with `tar xzf {} -C {}`'.format(tarball, directory)
               if os.path.isfile(tarball) else _WHERE)
        if len(missing) == 6:
            what = 'no CIFAR-10 batches there'
        else:
            what = '{} missing'.format(', '.join(missing))
        raise files.DatasetError(
            '{}: {} (the CIFAR-10 python version has data_batch_1..5 and '
            'test_batch); {}'.format(directory, what, fix))
    seen = {}
    out = {}
    for split, names in (('train', TRAIN_BATCHES), ('test', (TEST_BATCH,))):
        parts = []
        for name in names:
            path = os.path.join(directory, name)
            images, labels = _check_batch(_unpickle(path, rows_per_batch),
                                          path, rows_per_batch)
            digest = hashlib.sha256(images.tobytes()).hexdigest()
            if digest in seen:  # e.g. one batch copied over another
                raise files.DatasetError(
                    '{}: the same images as {}; {}'.format(
                        path, seen[digest], _REPLACE))
            seen[digest] = name
            parts.append((images, labels))
        images = numpy.concatenate([p[0] for p in parts])
        labels = numpy.concatenate([p[1] for p in parts])
        _check_balanced(labels, directory, 'training batches'
                        if split == 'train' else TEST_BATCH)
        out[split] = images, labels
    return out


def get_cifar10(withlabel=True, ndim=3, scale=1., dtype=None,
                label_dtype=numpy.int32, data_dir=None, rows_per_batch=None):
    """Gets CIFAR-10 like :func:`chainer.datasets.get_cifar10`, from the
    official files in ``data_dir`` (see the module doc).

    Args:
        withlabel (bool): Return labels too.
        ndim (int): 3: images of shape (3, 32, 32); 1: (3072,), the pixels
            in the same order.
        scale (float): Pixel values are in ``[0, scale]``.
        dtype: Image dtype (default: ``chainer.config.dtype``).
        label_dtype: Label dtype.
        data_dir (str): ``cifar-10-batches-py`` or the directory holding it.
        rows_per_batch (int): See :func:`load_raw`.

    Returns:
        ``(train, test)``: :class:`~chainer.datasets.TupleDataset` s of
        ``(image, label)`` if ``withlabel``, otherwise image arrays.
    """
    dtype = chainer.get_dtype(dtype)
    raw = load_raw(data_dir, rows_per_batch)
    return tuple(
        files.to_dataset(images, labels, SHAPE, withlabel, ndim, scale,
                         dtype, label_dtype, 'CIFAR-10')
        for images, labels in (raw['train'], raw['test']))

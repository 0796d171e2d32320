"""MNIST, loaded from verified IDX files instead of the dead original URLs.

``chainer.datasets.get_mnist()`` downloads from yann.lecun.com, which answers
HTTP 403. This module reads the four standard IDX files (gzip-compressed or
not) and accepts them only if the SHA-256 of their uncompressed content is
that of MNIST, so a truncated, corrupted or different file is an error naming
the file and the fix, never a silently different dataset.

Where the files are looked for:

1. ``data_dir``, if given (nothing is downloaded then);
2. otherwise the copy shipped in this repository (``data/mnist``), then
   Chainer's dataset cache (``$CHAINER_DATASET_ROOT/qnn/mnist``, by default
   ``~/.chainer/dataset/qnn/mnist``); a file found in neither is downloaded
   from present-day public mirrors into that cache and checked the same way.
"""
import io
import os
import tempfile
from urllib import request

import numpy

from qnn.datasets import files
from qnn.datasets import idx

# (name, SHA-256 of the uncompressed IDX content): the same wherever a copy
# comes from, unlike the hash of a .gz, which depends on the compressor.
FILES = (
    ('train-images-idx3-ubyte',
     'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db'),
    ('train-labels-idx1-ubyte',
     '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5'),
    ('t10k-images-idx3-ubyte',
     '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7'),
    ('t10k-labels-idx1-ubyte',
     'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2'),
)
SHA256 = dict(FILES)

# data/mnist at the repository root (this file is qnn/datasets/mnist.py)
EMBEDDED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'data', 'mnist')

# Public mirrors serving the same four .gz files.
MIRRORS = (
    'https://ossci-datasets.s3.amazonaws.com/mnist/',
    'https://storage.googleapis.com/cvdf-datasets/mnist/',
)

# The shape of one image: (channels, height, width).
SHAPE = (1, 28, 28)
# bytes of each file's uncompressed content
SIZES = idx.sizes(60000, 10000, SHAPE)

# Kept for train_mnist.py and older callers: all data set readers raise the
# one type, files.DatasetError, whose message is one line.
MnistDataError = files.DatasetError


def _fix_for(directory):
    # EMBEDDED_DIR is read at each call: tests point it elsewhere
    if os.path.abspath(directory) == EMBEDDED_DIR:
        return ('restore the repository copy with '
                '`git checkout -- data/mnist`')
    return 'delete it or replace it with the original MNIST file'


def _verified(name, content, source, fix):
    return idx.verified(content, name, SHA256[name], 'MNIST', source,
                        fix)


def _load(name, path):
    fix = _fix_for(os.path.dirname(path))
    return idx.load_file(path, name, SHA256[name], 'MNIST', fix,
                         SIZES[name])


def _download(name, cache_dir, mirrors, timeout):
    """Fetches ``name.gz`` from the first mirror that serves the right bytes
    and stores it atomically in ``cache_dir``; returns the content."""
    errors = []
    for mirror in mirrors:
        url = mirror + name + '.gz'
        try:
            with request.urlopen(url, timeout=timeout) as response:
                compressed = response.read()
            content = _verified(
                name, files.decompress(io.BytesIO(compressed), SIZES[name],
                                       url, 'trying next mirror'),
                url, 'trying next mirror')
        except Exception as e:  # any failure moves on to the next mirror
            errors.append('{}: {}'.format(url, e))
            continue
        os.makedirs(cache_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix='.part')
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(compressed)
            os.replace(tmp, os.path.join(cache_dir, name + '.gz'))
        except BaseException:
            os.unlink(tmp)
            raise
        return content
    raise MnistDataError(
        '{}.gz: not found in {} nor in {}, and no mirror provided it ({}); '
        'restore the repository copy with `git checkout -- data/mnist` or '
        'put the four MNIST files in a directory and pass it as the data '
        'directory'.format(name, EMBEDDED_DIR, cache_dir, '; '.join(errors)))


def _content(name, data_dir, mirrors, timeout):
    if data_dir is not None:
        path = idx.find(name, data_dir)
        if path is None:
            raise MnistDataError(
                '{}: neither {}.gz nor {} is in the data directory {}; copy '
                'the four MNIST files there, or leave the data directory '
                'unset to use the copy shipped in data/mnist'.format(
                    name, name, name, data_dir))
        return _load(name, path)
    path = idx.find(name, EMBEDDED_DIR)
    if path is not None:
        return _load(name, path)
    # Chainer only past the shipped copy: inference.py reads that copy with
    # NumPy alone
    from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
    import chainer
    cache_dir = chainer.dataset.get_dataset_directory(
        'qnn/mnist', create_directory=False)
    path = idx.find(name, cache_dir)
    if path is not None:
        return _load(name, path)
    return _download(name, cache_dir, mirrors, timeout)


def load_raw(data_dir=None, mirrors=MIRRORS, timeout=30):
    """Returns ``{'train': (images, labels), 'test': (images, labels)}``.

    Images are ``uint8`` arrays of shape ``(n, 784)``, labels ``uint8`` of
    shape ``(n,)``. Raises :class:`MnistDataError` for a missing or wrong
    file.
    """
    return idx.load_splits(
        lambda name: _content(name, data_dir, mirrors, timeout))


def get_mnist(withlabel=True, ndim=1, scale=1., dtype=None,
              label_dtype=numpy.int32, data_dir=None):
    """Gets MNIST like :func:`chainer.datasets.get_mnist`, from verified files.

    Pixels are scaled to ``[0, scale]``. Returns ``(train, test)``:
    :class:`~chainer.datasets.TupleDataset` s of ``(image, label)`` if
    ``withlabel``, otherwise image arrays.

    Args:
        withlabel (bool): Return labels too.
        ndim (int): 1: images of shape (784,); 2: (28, 28); 3: (1, 28, 28).
        scale (float): Pixel values are in ``[0, scale]``.
        dtype: Image dtype (default: ``chainer.config.dtype``).
        label_dtype: Label dtype.
        data_dir (str): Directory holding the four IDX files (``.gz`` or
            not); ``None`` uses the repository copy (see module doc).
    """
    from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
    import chainer
    dtype = chainer.get_dtype(dtype)
    raw = load_raw(data_dir)
    return tuple(
        files.to_dataset(images, labels, SHAPE, withlabel, ndim, scale,
                         dtype, label_dtype, 'MNIST')
        for images, labels in (raw['train'], raw['test']))

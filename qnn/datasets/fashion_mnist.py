"""Fashion-MNIST (Xiao et al. 2017), from verified IDX files; no download.

Same format and sizes as MNIST (60000 training and 10000 test images of
28x28 grey pixels, 10 classes: 0 T-shirt/top, 1 Trouser, 2 Pullover,
3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot), read
by :mod:`qnn.datasets.idx` and accepted only if the SHA-256 of each file's
uncompressed content is that of Fashion-MNIST.

Where the four files are looked for:

1. ``data_dir``, if given;
2. otherwise :data:`DEBIAN_DIR`, where Debian's package
   ``dataset-fashion-mnist`` installs them (``apt-get install
   dataset-fashion-mnist``, or ``make fashion-mnist``).
"""
import os

import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

from qnn.datasets import files
from qnn.datasets import idx

# (name, SHA-256 of the uncompressed IDX content). Computed from the files
# of Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1, whose headers
# and lengths are those of Fashion-MNIST (60000/10000 items of 28x28) and
# whose uncompressed MD5s are the publisher's. Debian's .gz files are not
# the publisher's byte for byte, hence hashes of the content.
FILES = (
    ('train-images-idx3-ubyte',
     'c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888'),
    ('train-labels-idx1-ubyte',
     'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9'),
    ('t10k-images-idx3-ubyte',
     '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b'),
    ('t10k-labels-idx1-ubyte',
     '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34'),
)
SHA256 = dict(FILES)

DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
DEBIAN_PACKAGE = 'dataset-fashion-mnist'

# The shape of one image: (channels, height, width).
SHAPE = (1, 28, 28)
# bytes of each file's uncompressed content
SIZES = idx.sizes(60000, 10000, SHAPE)

_INSTALL = ('apt-get install {} (or make fashion-mnist), or pass --data-dir '
            'DIR holding the four Fashion-MNIST IDX files'
            .format(DEBIAN_PACKAGE))


def _fix_for(directory):
    # DEBIAN_DIR is read at each call: tests point it elsewhere
    if os.path.abspath(directory) == os.path.abspath(DEBIAN_DIR):
        return 'reinstall it: apt-get install --reinstall {}'.format(
            DEBIAN_PACKAGE)
    return 'delete it or replace it with the original Fashion-MNIST file'


def _content(name, data_dir):
    directory = DEBIAN_DIR if data_dir is None else data_dir
    path = idx.find(name, directory)
    if path is not None:
        return idx.load_file(path, name, SHA256[name], 'Fashion-MNIST',
                             _fix_for(directory), SIZES[name])
    if data_dir is not None:
        raise files.DatasetError(
            '{}: neither {}.gz nor {} is in this data directory; copy the '
            'four Fashion-MNIST IDX files there, or leave --data-dir unset '
            'to use those of apt-get install {}'.format(
                data_dir, name, name, DEBIAN_PACKAGE))
    if not os.path.isdir(DEBIAN_DIR):
        raise files.DatasetError(
            '{}: no such directory, Fashion-MNIST is not installed; {}'
            .format(DEBIAN_DIR, _INSTALL))
    raise files.DatasetError(
        '{}: neither {}.gz nor {} is there; {}'.format(
            DEBIAN_DIR, name, name,
            'apt-get install --reinstall {}, or pass --data-dir DIR holding '
            'the four Fashion-MNIST IDX files'.format(DEBIAN_PACKAGE)))


def available(data_dir=None):
    """Whether all four files are present (not whether they are right)."""
    directory = DEBIAN_DIR if data_dir is None else data_dir
    try:
        return all(idx.find(name, directory) is not None
                   for name, _ in FILES)
    except files.DatasetError:  # a directory this user cannot look into
        return False


def load_raw(data_dir=None):
    """Returns ``{'train': (images, labels), 'test': (images, labels)}``.

    Images are ``uint8`` arrays of shape ``(n, 784)``, labels ``uint8`` of
    shape ``(n,)``. Raises :class:`qnn.datasets.files.DatasetError` for a
    missing or wrong file.
    """
    return idx.load_splits(lambda name: _content(name, data_dir))


def get_fashion_mnist(withlabel=True, ndim=1, scale=1., dtype=None,
                      label_dtype=numpy.int32, data_dir=None):
    """Gets Fashion-MNIST, with the options of
    :func:`qnn.datasets.mnist.get_mnist`.

    Args:
        withlabel (bool): Return labels too.
        ndim (int): 1: images of shape (784,); 2: (28, 28); 3: (1, 28, 28).
        scale (float): Pixel values are in ``[0, scale]``.
        dtype: Image dtype (default: ``chainer.config.dtype``).
        label_dtype: Label dtype.
        data_dir (str): Directory holding the four IDX files (``.gz`` or
            not); ``None`` uses Debian's (see module doc).

    Returns:
        ``(train, test)``: :class:`~chainer.datasets.TupleDataset` s of
        ``(image, label)`` if ``withlabel``, otherwise image arrays.
    """
    dtype = chainer.get_dtype(dtype)
    raw = load_raw(data_dir)
    return tuple(
        files.to_dataset(images, labels, SHAPE, withlabel, ndim, scale,
                         dtype, label_dtype, 'Fashion-MNIST')
        for images, labels in (raw['train'], raw['test']))

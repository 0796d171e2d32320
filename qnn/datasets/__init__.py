"""One entry point for the data sets a network can be trained on.

:func:`get_dataset` returns MNIST, Fashion-MNIST or CIFAR-10 as
``(train, test)`` :class:`~chainer.datasets.TupleDataset` s of float images
in ``[shift, shift + scale]`` and ``int32`` labels, from verified files;
:data:`INFO` says what a network needs to know beforehand (image shape,
classes). Every failure to find or accept the files is a
:class:`DatasetError` with a one-line message naming the file or directory,
what is wrong and the fix.

* ``'mnist'``: 4 IDX files checked by SHA-256; by default the copy shipped
  in ``data/mnist``; images 1x28x28.
* ``'fashion-mnist'``: 4 IDX files checked by SHA-256; by default those of
  Debian's package ``dataset-fashion-mnist``; images 1x28x28.
* ``'cifar10'``: the 6 official Python batches, checked by structure; no
  default, ``data_dir`` is needed; images 3x32x32.

See :mod:`qnn.datasets.mnist`, :mod:`qnn.datasets.fashion_mnist` and
:mod:`qnn.datasets.cifar10`.
"""
import collections
import os

import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)

from qnn.datasets import cifar10
from qnn.datasets import fashion_mnist
from qnn.datasets import files
from qnn.datasets import idx
from qnn.datasets import mnist

DatasetError = files.DatasetError


class DatasetInfo(collections.namedtuple(
        'DatasetInfo', 'name label shape n_classes n_train n_test')):
    """What a network needs to know about a data set before loading it.

    Attributes:
        name (str): As passed to :func:`get_dataset`.
        label (str): As printed (``'Fashion-MNIST'``).
        shape (tuple): One image, ``(channels, height, width)``.
        n_classes (int): Labels are ``0 .. n_classes - 1``.
        n_train (int): Training images of the real data set.
        n_test (int): Test images of the real data set.
    """

    @property
    def in_channels(self):
        """Channels of an image (``ndim=3``)."""
        return self.shape[0]

    @property
    def size(self):
        """Height (= width) of an image, in pixels."""
        return self.shape[1]

    @property
    def in_size(self):
        """Values of a flat image (``ndim=1``): channels * height * width."""
        return int(numpy.prod(self.shape))


INFO = collections.OrderedDict((info.name, info) for info in (
    DatasetInfo('mnist', 'MNIST', mnist.SHAPE, 10, 60000, 10000),
    DatasetInfo('fashion-mnist', 'Fashion-MNIST', fashion_mnist.SHAPE,
                10, 60000, 10000),
    DatasetInfo('cifar10', 'CIFAR-10', cifar10.SHAPE,
                cifar10.N_CLASSES, 5 * cifar10.ROWS_PER_BATCH,
                cifar10.ROWS_PER_BATCH),
))
NAMES = tuple(INFO)

# get_dataset's pixel range, by train_mnist.py --input-range: Chainer's [0, 1]
# or BinaryNet's [-1, 1] (its scripts feed 2 p - 1). With input dropout the
# two differ: a dropped background pixel is 0 in both, so it changes nothing
# in [0, 1] and moves a -1 to 0 in [-1, 1].
INPUT_RANGES = collections.OrderedDict((
    ('unit', {'scale': 1., 'shift': 0.}),
    ('symmetric', {'scale': 2., 'shift': -1.}),
))

_GETTERS = {
    'mnist': lambda **kwargs: mnist.get_mnist(**kwargs),
    'fashion-mnist':
        lambda **kwargs: fashion_mnist.get_fashion_mnist(**kwargs),
    'cifar10': lambda **kwargs: cifar10.get_cifar10(**kwargs),
}


def get_info(name):
    """Returns the :class:`DatasetInfo` of ``name`` (one of :data:`NAMES`)."""
    try:
        return INFO[name]
    except KeyError:
        raise ValueError('unknown dataset {!r}: one of {}'.format(
            name, ', '.join(NAMES)))


def get_dataset(name, data_dir=None, ndim=1, scale=1., shift=0.,
                dtype=None):
    """Returns ``(train, test)`` of the data set ``name``.

    Args:
        name (str): ``'mnist'``, ``'fashion-mnist'`` or ``'cifar10'``.
        data_dir (str): Directory with the data set's files; ``None``: the
            default location (MNIST: the shipped copy; Fashion-MNIST:
            Debian's package; CIFAR-10 has none, so it is an error).
        ndim (int): 1: flat images of ``in_size`` values; 3:
            ``(channels, height, width)``; 2 (one channel only):
            ``(height, width)``.
        scale (float): Width of the pixel range.
        shift (float): Pixel values are in ``[shift, shift + scale]``:
            :math:`p \\cdot \\mathrm{scale} / 255 + \\mathrm{shift}`.
        dtype: Image dtype (default: ``chainer.config.dtype``).

    Returns:
        Two :class:`~chainer.datasets.TupleDataset` s of ``(image, label)``,
        labels ``int32``.

    Raises:
        DatasetError: The files are missing or wrong; one-line message.
        ValueError: Unknown ``name`` or ``ndim``.
    """
    get_info(name)
    # Looked up in the module at each call, so that a test that replaces
    # mnist.get_mnist replaces it here too.
    splits = _GETTERS[name](ndim=ndim, scale=scale, dtype=dtype,
                            label_dtype=numpy.int32, data_dir=data_dir)
    if shift:
        for dataset in splits:
            # the TupleDataset's own image array, fresh from the getter
            images = dataset._datasets[0]
            images += images.dtype.type(shift)
    return splits


def load_raw(name, data_dir=None):
    """``{'train': (images, labels), 'test': (images, labels)}`` of the data
    set ``name`` as stored: ``uint8`` flat images ``(n, in_size)`` in
    channel, row, column order and ``uint8`` labels (what a packed network
    reads). ``data_dir`` as :func:`get_dataset`'s; raises
    :class:`DatasetError` or ``ValueError`` as it does."""
    get_info(name)
    if name == 'mnist':
        return mnist.load_raw(data_dir)
    if name == 'fashion-mnist':
        return fashion_mnist.load_raw(data_dir)
    return cifar10.load_raw(data_dir)


def paths(name, data_dir=None):
    """The files of the data set ``name`` that :func:`load_raw` would read
    (those that exist), so that no output of a command replaces them."""
    get_info(name)
    if name == 'cifar10':
        if data_dir is None or not os.path.isdir(data_dir):
            return []
        directory = cifar10.batch_directory(data_dir)
        return [os.path.join(directory, batch) for batch in
                cifar10.TRAIN_BATCHES + (cifar10.TEST_BATCH,)]
    directories = [data_dir] if data_dir is not None else \
        [mnist.EMBEDDED_DIR] if name == 'mnist' else \
        [fashion_mnist.DEBIAN_DIR]
    found = []
    for directory in directories:
        for file_name in idx.file_names():
            for path in (os.path.join(directory, file_name + '.gz'),
                         os.path.join(directory, file_name)):
                if os.path.lexists(path):
                    found.append(path)
    return found

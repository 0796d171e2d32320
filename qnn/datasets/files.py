"""What the data set readers share: their error type, and images to datasets.

:mod:`qnn.datasets.idx` (MNIST, Fashion-MNIST) and :mod:`qnn.datasets.cifar10`
read different formats but fail the same way, with a :class:`DatasetError`
whose message is one line naming the file or directory, what is wrong with it,
and the fix, so that a command-line program can print it as its only error
line. They also turn ``uint8`` pixels into the same float datasets, by
:func:`to_dataset`, as :func:`chainer.datasets.get_mnist` does.
"""
import gzip
import zlib

from qnn.utils import input_files
from qnn.utils.pixels import PIXEL_MAX


class DatasetError(Exception):
    """A data file or directory is missing or not the data set it should be.

    The message is a single line: ``'<file or directory>: <what is wrong>;
    <fix>'``. Line breaks in what it quotes (an OS or zlib error, a path)
    become spaces, so the one-line promise holds whatever they say.
    """

    def __init__(self, message):
        super(DatasetError, self).__init__(' '.join(message.splitlines()))


def read_content(path, fix, limit):
    """Returns the bytes of ``path``, uncompressed if its name ends in .gz,
    if they are at most ``limit`` (what the file holds at most).

    Any failure to read (missing, not a regular file, unreadable, larger
    than ``limit`` or, for a .gz, decompressing to more, which is found out
    after decompressing ``limit`` + 1 bytes, truncated or damaged gzip
    stream) is a :class:`DatasetError` ending with ``fix``.
    """
    try:
        with input_files.open_regular(path) as f:
            size = input_files.size_of(f)
            if path.endswith('.gz'):
                return decompress(f, limit, path, fix)
            if size > limit:
                raise input_files.TooLarge(path, size, limit, 'the file')
            return f.read(limit + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(
            '{}: cannot be read ({}); {}'.format(
                path, e.strerror if isinstance(e, OSError) and e.strerror
                else e, fix))


def decompress(stream, limit, source, fix):
    """The gzip-compressed content of the binary file ``stream``,
    decompressed no further than ``limit`` + 1 bytes (so a gzip bomb costs
    ``limit`` bytes); :class:`DatasetError` naming ``source`` if it holds
    more than ``limit``."""
    with gzip.GzipFile(fileobj=stream, mode='rb') as f:
        content = f.read(limit + 1)
    if len(content) > limit:
        raise DatasetError('{}: decompresses to more than the {} bytes the '
                           'file holds; {}'.format(source, limit, fix))
    return content


def to_dataset(images, labels, shape, withlabel, ndim, scale, dtype,
               label_dtype, name):
    """Turns ``uint8`` images of ``prod(shape)`` pixels into a dataset.

    Pixels become ``dtype`` values in ``[0, scale]``, as in
    :func:`chainer.datasets.get_mnist`.

    Args:
        images (numpy.ndarray): ``(n, channels * height * width)`` uint8,
            each row in the order of ``shape``.
        labels (numpy.ndarray): ``(n,)`` class numbers.
        shape (tuple): ``(channels, height, width)``.
        ndim (int): 1: rows of ``channels * height * width`` values;
            2: ``(height, width)``, for one channel only;
            3: ``(channels, height, width)``.
        name (str): The data set, for the error about ``ndim``.

    Returns:
        A :class:`~chainer.datasets.TupleDataset` of ``(image, label)`` if
        ``withlabel``, otherwise the image array.
    """
    if ndim == 2 and shape[0] == 1:
        images = images.reshape((-1,) + tuple(shape[1:]))
    elif ndim == 3:
        images = images.reshape((-1,) + tuple(shape))
    elif ndim != 1:
        raise ValueError('invalid ndim for {} dataset: {}'.format(name, ndim))
    images = images.astype(dtype)
    images *= scale / PIXEL_MAX
    if withlabel:
        # imported here: reading the files needs NumPy alone (inference.py)
        from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
        from chainer.datasets import tuple_dataset
        return tuple_dataset.TupleDataset(images, labels.astype(label_dtype))
    return images

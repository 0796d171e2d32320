"""IDX files (the format of MNIST and Fashion-MNIST), checked by SHA-256.

A data set in this format is four files, each possibly gzip-compressed
(``NAME.gz``) or not (``NAME``):

========================  =====================================
``train-images-idx3-ubyte``  training images
``train-labels-idx1-ubyte``  training labels
``t10k-images-idx3-ubyte``   test images
``t10k-labels-idx1-ubyte``   test labels
========================  =====================================

An IDX file is a big-endian header followed by the items as unsigned bytes:
a 4-byte magic number ``0x00000803`` (images: type 0x08, unsigned byte, 3
dimensions) or ``0x00000801`` (labels: 1 dimension), then one 4-byte size
per dimension (number of items, then rows and columns for images), then
``items * rows * cols`` (or ``items``) bytes.

A file is accepted only if the SHA-256 of its *uncompressed* content is the
one expected: the same for every copy, unlike the hash of a ``.gz``, which
depends on the compressor (Debian's Fashion-MNIST ``.gz`` files differ from
the publisher's, their content does not). Anything else, truncated,
corrupted or another data set, is a :class:`qnn.datasets.files.DatasetError`.
"""
import hashlib
import os
import struct

import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)

from qnn.datasets import files

# (split, file name prefix)
SPLITS = (('train', 'train'), ('test', 't10k'))
IMAGES = '{}-images-idx3-ubyte'
LABELS = '{}-labels-idx1-ubyte'

_IMAGE_MAGIC = 0x803  # unsigned bytes, 3 dimensions
_LABEL_MAGIC = 0x801  # unsigned bytes, 1 dimension


def file_names():
    """The four file names (without ``.gz``), training images first."""
    return tuple(pattern.format(prefix) for _, prefix in SPLITS
                 for pattern in (IMAGES, LABELS))


def sizes(n_train, n_test, shape):
    """``{file name: bytes of its uncompressed content}`` of a data set of
    ``n_train`` and ``n_test`` images of ``shape`` (channels, rows,
    columns; one channel)."""
    pixels = shape[1] * shape[2]
    items = {'train': n_train, 't10k': n_test}
    return {pattern.format(prefix): offset + items[prefix] * each
            for _, prefix in SPLITS
            for pattern, offset, each in ((IMAGES, 16, pixels),
                                          (LABELS, 8, 1))}


def find(name, directory):
    """Returns the path of ``name.gz`` or else ``name`` in ``directory``
    (whatever it is: a FIFO or a device is refused when it is read), or
    ``None`` if neither is there; raises
    :class:`qnn.datasets.files.DatasetError` if the directory cannot be
    looked into (no permission)."""
    for path in (os.path.join(directory, name + '.gz'),
                 os.path.join(directory, name)):
        try:
            os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise files.DatasetError(
                '{}: cannot be read ({}); give this user access to {} or '
                'choose another data directory'.format(
                    path, e.strerror or e, directory))
        return path
    return None


def verified(content, name, sha256, label, source, fix):
    """Returns ``content`` if its SHA-256 is ``sha256``.

    Otherwise raises :class:`qnn.datasets.files.DatasetError`: ``source`` (a
    path or URL) holds something that is not the file ``name`` of the data set
    ``label``; the message ends with ``fix``.
    """
    digest = hashlib.sha256(content).hexdigest()
    if digest != sha256:
        raise files.DatasetError(
            '{}: content is not {} {} (SHA-256 of the uncompressed data is '
            '{}, expected {}: truncated, corrupted or another dataset); {}'
            .format(source, label, name, digest, sha256, fix))
    return content


def load_file(path, name, sha256, label, fix, size):
    """Reads ``path`` (``.gz`` or plain; no more than the ``size`` bytes
    the file ``name`` holds) and checks it is ``name``."""
    return verified(files.read_content(path, fix, size), name, sha256,
                    label, path, fix)


def parse(content, source):
    """Returns the items of IDX content as a ``uint8`` array.

    Images come as ``(items, rows * cols)``, labels as ``(items,)``. The
    header must agree with the length, so that content that did not go
    through :func:`verified` fails here rather than being misread.
    """
    def fail(what):
        raise files.DatasetError(
            '{}: not an IDX file of unsigned bytes ({}); replace it with the '
            'original file'.format(source, what))

    if len(content) < 8:
        fail('{} bytes, shorter than a header'.format(len(content)))
    magic, n = struct.unpack('>II', content[:8])
    if magic == _IMAGE_MAGIC and len(content) >= 16:
        rows, cols = struct.unpack('>II', content[8:16])
        offset, shape = 16, (n, rows * cols)
    elif magic == _LABEL_MAGIC:
        offset, shape = 8, (n,)
    else:
        fail('magic number 0x{:08x}'.format(magic))
    expected = offset + int(numpy.prod(shape, dtype=numpy.int64))
    if len(content) != expected:
        fail('{} bytes where its header announces {}'.format(
            len(content), expected))
    return numpy.frombuffer(content, numpy.uint8, offset=offset).reshape(
        shape)


def load_splits(content_of):
    """Returns ``{'train': (images, labels), 'test': (images, labels)}``.

    ``content_of(name)`` returns the verified content of the file ``name``
    (one of :func:`file_names`) and raises a
    :class:`qnn.datasets.files.DatasetError` when it cannot; ``name`` is also
    what parse errors call the file.
    """
    out = {}
    for split, prefix in SPLITS:
        out[split] = tuple(
            parse(content_of(pattern.format(prefix)),
                  pattern.format(prefix))
            for pattern in (IMAGES, LABELS))
    return out

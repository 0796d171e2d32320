"""IDX files (qnn.datasets.idx): parsed by their header, verified by the
SHA-256 of their content."""
import hashlib
import struct

import numpy
import pytest

from qnn.datasets import files
from qnn.datasets import idx


def images_file(n, rows, cols):
    return struct.pack('>IIII', 0x803, n, rows, cols) + bytes(
        range(n * rows * cols))


def test_parse_images_and_labels():
    images = idx.parse(images_file(2, 3, 4), 'images')
    assert images.dtype == numpy.uint8 and images.shape == (2, 12)
    assert list(images[1]) == list(range(12, 24))
    labels = idx.parse(struct.pack('>II', 0x801, 3) + b'\x07\x01\x09', 'l')
    assert list(labels) == [7, 1, 9]


@pytest.mark.parametrize('content, what', [
    (b'\x00\x00', 'shorter than a header'),
    (struct.pack('>II', 0x802, 1) + b'x', 'magic number 0x00000802'),
    (images_file(2, 3, 4)[:-1], 'where its header announces 40'),
    (images_file(2, 3, 4) + b'x', 'where its header announces 40'),
])
def test_parse_refuses_what_the_header_does_not_announce(content, what):
    with pytest.raises(files.DatasetError) as e:
        idx.parse(content, 'name')
    assert str(e.value).startswith('name: not an IDX file of unsigned bytes')
    assert what in str(e.value)


def test_verified_by_the_content_hash(tmp_path):
    content = images_file(1, 2, 2)
    digest = hashlib.sha256(content).hexdigest()
    assert idx.verified(content, 'x', digest, 'MNIST', 'file', 'fix') == \
        content
    with pytest.raises(files.DatasetError) as e:
        idx.verified(content + b'\x00', 'x', digest, 'MNIST', 'file', 'fix')
    assert str(e.value).startswith('file: content is not MNIST x')
    assert str(e.value).endswith('; fix')


def test_file_names_and_find(tmp_path):
    names = idx.file_names()
    assert names[0] == 'train-images-idx3-ubyte' and len(names) == 4
    (tmp_path / (names[1] + '.gz')).write_bytes(b'')
    (tmp_path / names[1]).write_bytes(b'')
    (tmp_path / names[2]).write_bytes(b'')
    assert idx.find(names[1], str(tmp_path)).endswith(names[1] + '.gz')
    assert idx.find(names[2], str(tmp_path)).endswith(names[2])
    assert idx.find(names[0], str(tmp_path)) is None

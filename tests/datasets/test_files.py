"""What the data set readers share (qnn.datasets.files): one-line errors,
reading a file or its gzip, and uint8 images to datasets."""
import gzip

import numpy
import pytest

from qnn.datasets import files
from qnn.utils.pixels import PIXEL_MAX


def test_error_is_one_line():
    error = files.DatasetError('a: cannot be read (x\ny); fix')
    assert '\n' not in str(error)


def test_read_content_of_a_file_and_of_its_gzip(tmp_path):
    plain = tmp_path / 'data'
    plain.write_bytes(b'\x00\x01\x02')
    packed = tmp_path / 'data.gz'
    packed.write_bytes(gzip.compress(b'\x00\x01\x02'))
    assert files.read_content(str(plain), 'fix', 3) == b'\x00\x01\x02'
    assert files.read_content(str(packed), 'fix', 3) == b'\x00\x01\x02'
    for path in (plain, packed):  # more than the format holds
        with pytest.raises(files.DatasetError, match='more than'):
            files.read_content(str(path), 'fix', 2)


@pytest.mark.parametrize('content', [b'not gzip', gzip.compress(b'x' * 99)[
    :-9]])
def test_damaged_gzip_names_the_file_and_the_fix(tmp_path, content):
    path = tmp_path / 'data.gz'
    path.write_bytes(content)
    with pytest.raises(files.DatasetError) as e:
        files.read_content(str(path), 'download it again', 1000)
    assert str(e.value).startswith(str(path) + ': cannot be read')
    assert str(e.value).endswith('; download it again')


@pytest.mark.parametrize('ndim, shape', [(1, (3, 12)), (2, (3, 3, 4)),
                                         (3, (3, 1, 3, 4))])
def test_to_dataset_scales_and_shapes(ndim, shape):
    images = numpy.arange(36, dtype=numpy.uint8).reshape(3, 12) * 7
    labels = numpy.array([2, 0, 1], numpy.uint8)
    dataset = files.to_dataset(images, labels, (1, 3, 4), True, ndim, 2.,
                               numpy.float32, numpy.int32, 'test')
    x, t = dataset._datasets
    assert x.shape == shape and x.dtype == numpy.float32
    numpy.testing.assert_allclose(x.reshape(3, 12),
                                  images * (2. / PIXEL_MAX), rtol=1e-6)
    assert t.dtype == numpy.int32 and list(t) == [2, 0, 1]
    with pytest.raises(ValueError, match='invalid ndim'):
        files.to_dataset(images, labels, (3, 2, 2), True, 2, 1.,
                         numpy.float32, numpy.int32, 'test')

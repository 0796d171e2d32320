"""The pixels (qnn.utils.pixels): one unsigned byte, as the data sets store
them and a packed network reads them."""
import numpy

from qnn import datasets
from qnn.utils import pixels


def test_a_pixel_is_one_unsigned_byte():
    assert pixels.PIXEL_MAX == numpy.iinfo(numpy.uint8).max
    assert 2 ** pixels.PIXEL_BITS - 1 == pixels.PIXEL_MAX


def test_the_data_sets_store_such_pixels():
    images, _ = datasets.load_raw('mnist')['test']
    assert images.dtype == numpy.uint8
    assert images.max() == pixels.PIXEL_MAX

"""Bits and words (qnn.packed.bits): the packing layout, its padding, CuPy's
packing."""
import numpy
import pytest

from qnn.packed import bits as packed_bits


@pytest.mark.parametrize('n', [1, 10, 33, 63, 64, 65, 784, 1000])
def test_pack_bits_layout_and_padding(n):
    rng = numpy.random.default_rng(n)
    # two leading axes: the rows are packed as one flat run of bytes
    bits = rng.random((2, 3, n)) < 0.5
    words = packed_bits.pack_bits(bits)
    assert words.shape == (2, 3, (n + 63) // 64)
    assert words.dtype == numpy.uint64
    for i in (0, n // 2, n - 1):
        assert bool(words[1, 2, i // 64] >> numpy.uint64(i % 64) & 1) == \
            bits[1, 2, i]
    if n % 64:
        assert not (words[..., -1] >> numpy.uint64(n % 64)).any()
    numpy.testing.assert_array_equal(
        packed_bits.unpack_bits(words, n), bits)
    assert packed_bits.pack_bits(bits[:0]).shape == (0, 3, (n + 63) // 64)


@pytest.mark.gpu
def test_pack_bits_cupy_equals_numpy():
    import cupy
    bits = numpy.random.default_rng(1).random((2, 8, 785)) < 0.5
    words = packed_bits.pack_bits(cupy.asarray(bits))
    assert isinstance(words, cupy.ndarray)
    numpy.testing.assert_array_equal(cupy.asnumpy(words),
                                     packed_bits.pack_bits(bits))


def test_levels_pack_and_unpack():
    rng = numpy.random.RandomState(2)
    for bits, n in ((1, 65), (3, 64), (4, 130)):
        v = rng.randint(0, 2 ** bits, size=(7, n))
        planes = packed_bits.pack_levels(v, bits)
        assert planes.shape == (7, bits, (n + 63) // 64)
        numpy.testing.assert_array_equal(
            packed_bits.unpack_levels(planes, n), v)

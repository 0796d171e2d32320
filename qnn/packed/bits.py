"""Bits and words: how a packed network stores values, and their packing.

A vector of :math:`n` values :math:`\\pm 1` is :math:`\\lceil n / 64
\\rceil` unsigned 64-bit words; value :math:`i` is bit :math:`i \\bmod 64`
(0: least significant) of word :math:`\\lfloor i / 64 \\rfloor`; bit 1
means :math:`+1`, bit 0 means :math:`-1`; the padding bits
:math:`n \\dots 64 \\lceil n/64 \\rceil - 1` are 0 in weights and in
activations alike (the layout of :mod:`qnn.packed.format` files). Integers
of a few bits (8-bit pixels, k-bit level indices) are stored as bit
planes: plane :math:`b` packs bit :math:`b` of every value as above.

This module imports nothing of the package but the word size
(:mod:`qnn.backends.xnor_kernels`, shared with training) and the pixel
width (:mod:`qnn.utils.pixels`): the kernels, the folding and the file
format all build on it.
"""
import sys

import numpy

from qnn.backends.xnor_kernels import WORD_BITS  # NOQA: F401
from qnn.backends.xnor_kernels import n_words  # NOQA: F401
from qnn.utils.pixels import PIXEL_BITS  # NOQA: F401


def _array_module(a):
    """``cupy`` for a CuPy array, else ``numpy`` (CuPy is never imported
    here for a NumPy array)."""
    cupy = sys.modules.get('cupy')
    if cupy is not None and isinstance(a, cupy.ndarray):
        return cupy
    return numpy


def pack_bits(bits):
    """Packs a boolean array ``(..., n)`` (NumPy or CuPy) into ``uint64``
    words ``(..., ceil(n / 64))``: element ``i`` to bit ``i % 64`` of word
    ``i // 64``, the padding bits 0."""
    xp = _array_module(bits)
    bits = xp.asarray(bits, dtype=bool)
    n = bits.shape[-1]
    padded = xp.zeros(bits.shape[:-1] + (n_words(n) * WORD_BITS,), xp.uint8)
    padded[..., :n] = bits
    # packed flat (CuPy's packbits has no axis): each row is whole words,
    # so no byte spans two rows
    packed = xp.packbits(padded.reshape(-1), bitorder='little').reshape(
        padded.shape[:-1] + (padded.shape[-1] // 8,))
    # bytes in little-endian order make the words; astype: native order
    return packed.view('<u8').astype(xp.uint64, copy=False)


def unpack_bits(words, n):
    """Inverse of :func:`pack_bits`: ``(..., words)`` to booleans
    ``(..., n)``."""
    words = numpy.ascontiguousarray(words, dtype='<u8')
    raw = words.view(numpy.uint8)
    return numpy.unpackbits(raw, axis=-1, bitorder='little')[..., :n].astype(
        bool)


def pack_signs(x):
    """Packs the signs of a real array, :math:`x \\ge 0` (sign(0) = +1) to
    bit 1."""
    return pack_bits(numpy.asarray(x) >= 0)


def unpack_signs(words, n):
    """``(..., words)`` to the ``int64`` :math:`\\pm 1` values
    ``(..., n)`` they pack."""
    return 2 * unpack_bits(words, n).astype(numpy.int64) - 1


def pixel_planes(pixels):
    """Bit planes of 8-bit pixels ``(B, n)``: ``uint64`` ``(B, 8, words)``,
    plane ``b`` holding bit ``b`` of every pixel."""
    pixels = numpy.asarray(pixels, dtype=numpy.uint8)
    shifts = numpy.arange(PIXEL_BITS, dtype=numpy.uint8)
    planes = (pixels[:, None, :] >> shifts[None, :, None]) & 1
    return pack_bits(planes)


def n_levels(bits):
    """:math:`L = 2^k - 1`, the largest level index of ``bits`` bits."""
    return 2 ** bits - 1


def pack_levels(v, bits):
    """``(units, n)`` level indices to bit planes ``(units, bits, words)``
    (plane ``b`` holds bit ``b`` of every index)."""
    return numpy.stack([pack_bits((v >> b) & 1) for b in range(bits)],
                       axis=1)


def unpack_levels(planes, n):
    """Inverse of :func:`pack_levels`: ``int64`` ``(units, n)``."""
    v = numpy.zeros((planes.shape[0], n), numpy.int64)
    for b in range(planes.shape[1]):
        v |= unpack_bits(planes[:, b], n).astype(numpy.int64) << b
    return v


def numba_plane_packer(numba, words):
    """``pack_planes(values, i, bits=8)`` for numba code (inlined): the bit
    planes ``(bits, words)`` of row ``i`` of ``values`` (pixels or level
    indices), ``words`` a constant of the compiled code."""
    @numba.njit(inline='always')
    def pack_planes(values, i, bits=PIXEL_BITS):
        # the row zero padded to whole words; a fixed 64-bit loop per word
        # and plane vectorizes (an OR reduction)
        row = numpy.zeros(words * WORD_BITS, numpy.uint64)
        for k in range(values.shape[1]):
            row[k] = values[i, k]
        P = numpy.empty((bits, words), numpy.uint64)
        for b in range(bits):
            for k in range(words):
                word = numpy.uint64(0)
                for bit in range(WORD_BITS):
                    word |= ((row[k * WORD_BITS + bit] >> numpy.uint64(b))
                             & numpy.uint64(1)) << numpy.uint64(bit)
                P[b, k] = word
        return P

    return pack_planes

"""Kernels of k-bit layers: weights and activations of 1 to 4 bits as
exact integers (their folding: :mod:`qnn.packed.level_folding`).

A weight is its level index :math:`v`, stored as :math:`k_w` bit planes
(:func:`qnn.packed.bits.pack_levels`), and a hidden activation its index
:math:`u`, one ``uint8`` per value; :math:`L = 2^k - 1`. A layer's sum

.. math::

    S = \\sum_i (2u_i - L_a)(2v_i - L_w), \\qquad
    S = \\sum_i p_i (2v_i - L_w) \\quad \\text{(the first layer, pixels)}

is an exact integer; a ``'levels'`` output is the number of the unit's
ascending thresholds that :math:`S` reaches, an ``'affine'`` one the sums
themselves.

Implementations: :func:`reference_sums` by integer arithmetic in ``int64``
(the reference) and :func:`popcount_sums`, bit-serial popcounts on the
planes of the inputs and weights (numba, the path of ``inference.py``);
:func:`conv_level_maps` for the convolutions (integer sums through BLAS
where exact, the reference's pooling, the levels counted).
"""
import numpy

from qnn.backends import cpu_kernels
from qnn.backends import xnor_kernels
from qnn.packed import conv_kernels
from qnn.packed.bits import PIXEL_BITS
from qnn.packed.bits import n_levels
from qnn.packed.bits import numba_plane_packer
from qnn.packed.bits import unpack_levels
from qnn.packed.format import TAPS
from qnn.utils.pixels import PIXEL_MAX


def signed_weights(layer):
    """The layer's :math:`2v - L_w` as ``int64`` ``(n_out, n_in)``."""
    return signed_weights_of(layer, layer.n_in)


def signed_weights_of(layer, n):
    """:math:`2v - L_w` of the layer's weight planes over ``n`` values."""
    return 2 * unpack_levels(layer.weights, n) - n_levels(
        layer.levels['weight_bits'])


def signed_inputs(layer, x):
    """The layer's input as integers: pixels, or :math:`2u - L_a`."""
    x = numpy.asarray(x, numpy.int64)
    if layer.kind == 'levels_pixels':
        return x
    return 2 * x - n_levels(layer.levels['input_bits'])


def reference_sums(layer, x):
    """Integer sums ``int64`` ``(B, n_out)``, by integer arithmetic."""
    return signed_inputs(layer, x) @ signed_weights(layer).T


def popcount_sums(layer, x):
    """:func:`reference_sums` from the popcounts of pairs of bit planes
    (the numba kernel ``'level_sums'``): with :math:`P_j = \\sum_i x_i
    v_{ij}` and :math:`X = \\sum_i x_i`,

    .. math::

        S_j = 2P_j - L_w X \\quad \\text{(pixels)}, \\qquad
        S_j = 4P_j - 2 L_w X - 2 L_a \\sum_i v_{ij} + n L_a L_w

    (:math:`(2u - L_a)(2v - L_w)` expanded)."""
    x = numpy.require(x, numpy.uint8, ['C', 'W'])
    pixels = layer.kind == 'levels_pixels'
    bits = PIXEL_BITS if pixels else layer.levels['input_bits']
    L_w = n_levels(layer.levels['weight_bits'])
    L_a = n_levels(bits)
    WT = layer.cached('planes_transposed', lambda: numpy.ascontiguousarray(
        layer.weights.transpose(1, 2, 0)))
    gamma = layer.cached(('gamma', pixels), lambda: numpy.zeros(
        layer.n_out, numpy.int64) if pixels else (
            layer.n_in * L_a * L_w - 2 * L_a * unpack_levels(
                layer.weights, layer.n_in).sum(axis=1)))
    sums = numpy.empty((len(x), layer.n_out), numpy.int64)
    numba_kernels()['level_sums'](
        x, bits, WT, 2 if pixels else 4, -L_w if pixels else -2 * L_w,
        gamma, sums)
    return sums


def output_levels(sums, thresholds):
    """Each unit's level: the number of its thresholds the sum reaches."""
    return (numpy.asarray(sums)[:, :, None] >= thresholds[None]).sum(
        axis=2).astype(numpy.uint8)


def count_levels(sums, thresholds):
    """:func:`output_levels` on all cores (numba)."""
    out = numpy.empty(sums.shape, numpy.uint8)
    numba_kernels()['count_levels'](
        numpy.ascontiguousarray(sums), numpy.ascontiguousarray(thresholds),
        out)
    return out


def conv_level_maps(layer, x, count=None):
    """A k-bit convolution's output levels ``uint8`` ``(B, H', W', K)``:
    ``x`` is pixels ``(B, C*H*W)`` (``'conv_levels_pixels'``) or level
    maps ``(B, H, W, C)``; integer sums over the valid taps
    (:func:`qnn.packed.conv_kernels.conv_sums`), pooled (the minimum for a
    flipped channel), then the levels their thresholds give (counted by
    ``count``, :func:`output_levels` by default); in float32 (BLAS) where
    every sum is an integer below 2^24, in int64 beyond. The path of every
    backend: no bit kernels for it yet."""
    C, H, Wd = layer.conv['in_shape']
    K = layer.conv['channels']
    x = numpy.asarray(x, numpy.int64)
    if layer.kind == 'conv_levels_pixels':
        values = x.reshape(len(x), C, H, Wd)
    else:
        values = (2 * x - n_levels(layer.levels['input_bits'])).transpose(
            0, 3, 1, 2)
    W = layer.cached('signed_taps', lambda: signed_weights_of(
        layer, TAPS * C).reshape(K, TAPS, C).transpose(0, 2, 1).reshape(
            K, C, 3, 3))
    bound = TAPS * C * n_levels(layer.levels['weight_bits']) * (
        PIXEL_MAX if layer.kind == 'conv_levels_pixels'
        else n_levels(layer.levels['input_bits']))
    sums = conv_kernels.conv_sums(
        values, W, numpy.float32 if bound < 2 ** 24 else numpy.int64)
    if layer.conv['pool']:
        sums = conv_kernels.pool(sums, layer.flipped)
    B, K, H2, W2 = sums.shape
    maps = (count or output_levels)(
        numpy.ascontiguousarray(sums.transpose(0, 2, 3, 1)).reshape(-1, K),
        layer.thresholds)
    return maps.reshape(B, H2, W2, K)


def numba_conv_levels(layer, x):
    """:func:`conv_level_maps` by the numba kernel ``'conv_levels'``
    (where every sum is an integer below 2^24, else by
    :func:`conv_level_maps`): a direct 3x3 convolution of each image in
    float32, exact on these integers, channels last so that the sums of a
    position's output channels are one vector, pooled and counted against
    the thresholds in the same pass."""
    C, H, Wd = layer.conv['in_shape']
    K = layer.conv['channels']
    pixels = layer.kind == 'conv_levels_pixels'
    L_a = PIXEL_MAX if pixels else n_levels(layer.levels['input_bits'])
    if TAPS * C * n_levels(layer.levels['weight_bits']) * L_a >= 2 ** 24:
        return conv_level_maps(layer, x, count_levels)
    if pixels:  # (B, C*H*W) in channel, row, column order
        x = numpy.asarray(x, numpy.uint8).reshape(len(x), C, H, Wd)
        x = x.transpose(0, 2, 3, 1)
    X = numpy.require(x, numpy.uint8, ['C', 'W'])
    # the signed inputs u (pixels) or 2 u - L_a
    scale, offset = (1, 0) if pixels else (2, -L_a)
    sign, S, T = layer.cached('conv_levels', lambda: _conv_level_weights(
        layer))
    _, H2, W2 = layer.out_shape
    out = numpy.empty((len(X), H2, W2, K), numpy.uint8)
    numba_kernels()['conv_levels'](X, numpy.float32(scale),
                                   numpy.float32(offset), S, T, sign,
                                   layer.conv['pool'], out)
    return out


def _conv_level_weights(layer):
    """``sign`` ``int64`` ``(K,)`` (-1 for a flipped channel), the signed
    weights times it as ``float32`` ``(9, C, K)``, and the thresholds as
    ``int64`` ``(K, levels)``."""
    C = layer.conv['in_shape'][0]
    K = layer.conv['channels']
    sign = numpy.where(layer.flipped.astype(bool), -1, 1).astype(numpy.int64)
    W = signed_weights_of(layer, TAPS * C).reshape(K, TAPS, C)
    S = (W * sign[:, None, None]).transpose(1, 2, 0).astype(numpy.float32)
    return sign, numpy.ascontiguousarray(S), numpy.ascontiguousarray(
        layer.thresholds, numpy.int64)


def reference_conv_levels(layer, x):
    """:func:`conv_level_maps` by integer arithmetic, position by position
    (the reference it is tested against): each position's 3x3 patch of
    signed inputs (zero outside the image) times the signed weights in
    ``int64``; each 2x2 window's maximum (minimum for a flipped channel)
    over the positions it holds; the levels the thresholds give."""
    C, H, Wd = layer.conv['in_shape']
    K = layer.conv['channels']
    x = numpy.asarray(x, numpy.int64)
    if layer.kind == 'conv_levels_pixels':
        values = x.reshape(len(x), C, H, Wd).transpose(0, 2, 3, 1)
    else:
        values = 2 * x - n_levels(layer.levels['input_bits'])
    B = len(values)
    padded = numpy.zeros((B, H + 2, Wd + 2, C), numpy.int64)
    padded[:, 1:-1, 1:-1] = values
    weights = signed_weights_of(layer, TAPS * C)  # (K, (tap, channel))
    sums = numpy.empty((B, H, Wd, K), numpy.int64)
    for y in range(H):
        for x0 in range(Wd):
            patch = padded[:, y:y + 3, x0:x0 + 3].reshape(B, TAPS * C)
            sums[:, y, x0] = patch @ weights.T
    if layer.conv['pool']:
        sums = _reference_pool(sums, layer.flipped.astype(bool))
    levels = output_levels(sums.reshape(-1, K), layer.thresholds)
    return levels.reshape(sums.shape)


def _reference_pool(sums, flipped):
    B, H, Wd, K = sums.shape
    H2, W2 = (H + 1) // 2, (Wd + 1) // 2
    out = numpy.empty((B, H2, W2, K), sums.dtype)
    for y in range(H2):
        for x in range(W2):
            window = sums[:, 2 * y:2 * y + 2, 2 * x:2 * x + 2]
            out[:, y, x] = numpy.where(flipped, window.min(axis=(1, 2)),
                                       window.max(axis=(1, 2)))
    return out


# --- numba ------------------------------------------------------------------

_numba = None


def numba_kernels():
    """``'level_sums'`` (compiled once for each number of input words),
    ``'count_levels'`` and ``'conv_levels'``, built on first use."""
    global _numba
    if _numba is None:
        numba = cpu_kernels.import_numba()
        popcount = xnor_kernels.popcount_intrinsic()
        by_words = {}

        def level_sums(values, bits, WT, *args):
            words = WT.shape[1]
            if words not in by_words:
                by_words[words] = _level_sums_kernel(
                    numba, popcount, words,
                    numba_plane_packer(numba, words))
            by_words[words](values, bits, WT, *args)

        _numba = {'level_sums': level_sums,
                  'count_levels': _count_levels_kernel(numba),
                  'conv_levels': _conv_levels_kernel(numba)}
    return _numba


def _level_sums_kernel(numba, popcount, words, pack_planes):
    """``'level_sums'``: for k-bit values :math:`x` (pixels or level
    indices, ``bits`` planes) and weight level indices :math:`v` stored as
    planes ``WT`` ``(weight bits, words, units)``, the sums
    :math:`\\alpha P_j + \\beta X + \\gamma_j` of the products
    :math:`P_j = \\sum_i x_i v_{ij} = \\sum_{b, c} 2^{b + c}
    \\mathrm{popcount}(X_b \\wedge V_{c,j})` (one popcount per pair of
    planes and word) and the image's total :math:`X = \\sum_i x_i`, over
    the images on all cores (:func:`popcount_sums` gives the
    coefficients)."""
    @numba.njit(parallel=True)
    def level_sums(values, bits, WT, alpha, beta, gamma, sums):
        B = values.shape[0]
        weight_bits, _, M = WT.shape
        for i in numba.prange(B):
            P = pack_planes(values, i, bits)
            total = 0
            for k in range(values.shape[1]):
                total += values[i, k]
            acc = numpy.zeros(M, numpy.int64)
            for b in range(bits):
                for c in range(weight_bits):
                    V = WT[c]
                    for j in range(M):
                        d = 0
                        for k in range(words):
                            d += popcount(P[b, k] & V[k, j])
                        acc[j] += d << (b + c)
            for j in range(M):
                sums[i, j] = alpha * acc[j] + beta * total + gamma[j]

    return level_sums


def _count_levels_kernel(numba):
    """``'count_levels'``: each unit's level, the number of its ascending
    thresholds ``T`` ``(units, levels)`` that its sum reaches, over the
    images on all cores."""
    @numba.njit(parallel=True)
    def count_levels(sums, T, out):
        B, M = sums.shape
        for i in numba.prange(B):
            for j in range(M):
                n = 0
                for m in range(T.shape[1]):
                    n += sums[i, j] >= T[j, m]
                out[i, j] = n

    return count_levels


def _conv_levels_kernel(numba):
    """``'conv_levels'``: the output levels of a k-bit convolution
    (:func:`numba_conv_levels`), over the images on all cores."""
    @numba.njit(parallel=True)
    def conv_levels(X, scale, offset, S, T, sign, pool, out):
        # X (B, H, W, C) uint8, the input scale X + offset; S (9, C, K)
        # the weights times sign[k], so that pooling by the maximum gives
        # sign[k] times the layer's pooled sum (its minimum for a flipped
        # channel); out (B, H', W', K)
        B, H, Wd, C = X.shape
        K = S.shape[2]
        step = 2 if pool else 1
        for b in numba.prange(B):
            p = numpy.zeros((H + 2, Wd + 2, C), numpy.float32)
            for y in range(H):
                for x in range(Wd):
                    for c in range(C):
                        p[y + 1, x + 1, c] = scale * numpy.float32(
                            X[b, y, x, c]) + offset
            sums = numpy.zeros((H, Wd, K), numpy.float32)
            for y in range(H):
                for x in range(Wd):
                    acc = sums[y, x]
                    for t in range(TAPS):
                        row = p[y + t // 3, x + t % 3]
                        St = S[t]
                        for c in range(C):
                            v = row[c]
                            for k in range(K):
                                acc[k] += v * St[c, k]
            for y in range(out.shape[1]):
                # cover_all: the last window of an odd size reads its one
                # row (column) twice
                y0 = y * step
                y1 = min(y0 + step - 1, H - 1)
                for x in range(out.shape[2]):
                    x0 = x * step
                    x1 = min(x0 + step - 1, Wd - 1)
                    for k in range(K):
                        best = max(max(sums[y0, x0, k], sums[y0, x1, k]),
                                   max(sums[y1, x0, k], sums[y1, x1, k]))
                        s = sign[k] * numpy.int64(best)
                        n = 0
                        for m in range(T.shape[1]):
                            n += s >= T[k, m]
                        out[b, y, x, k] = n

    return conv_levels

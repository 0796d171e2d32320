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
from qnn.packed.bits import pack_bits
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
    """:func:`conv_level_maps` by the numba kernel ``'conv_levels'``:
    popcounts of the bit planes of the inputs against those of the
    weights, a position's 9 taps packed into patch words as
    :mod:`qnn.packed.conv_kernels` packs a binarized convolution's. With
    the signed input :math:`a u + o` (pixels: :math:`a = 1, o = 0`; levels:
    :math:`a = 2, o = -L_a`) and the signed weight :math:`2v - L_w`, a
    position's sum over its valid taps is

    .. math::

        S = 2a \\sum u v - a L_w \\sum u + \\left(2o \\sum_{\\mathrm{valid}}
        v - o L_w n_{\\mathrm{valid}}\\right)

    where the input planes are 0 outside the image, so the first two sums
    run over the patch words, and the last term, the position's ``base``,
    is made once per layer; :math:`\\sum u v = \\sum_{b, c} 2^{b + c}
    \\mathrm{popcount}(U_b \\wedge V_c)`.

    A first layer (``'conv_levels_pixels'``) runs the kernel of that name
    instead, the sums of :mod:`qnn.packed.conv_kernels`'s pixel
    convolution in float32 (exact: integers below 2^24, else
    :func:`conv_level_maps`): 8 pixel planes of 1 channel fill 9 bits of
    a word each, and popcounts took 10x its time (2-core AMD EPYC,
    2026-12-07)."""
    C, H, Wd = layer.conv['in_shape']
    K = layer.conv['channels']
    pixels = layer.kind == 'conv_levels_pixels'
    L_a = PIXEL_MAX if pixels else n_levels(layer.levels['input_bits'])
    _, H2, W2 = layer.out_shape
    out = numpy.empty((len(x), H2, W2, K), numpy.uint8)
    if pixels:  # (B, C*H*W) in channel, row, column order
        if TAPS * C * PIXEL_MAX * n_levels(layer.levels['weight_bits']) >= \
                2 ** 24:  # beyond float32's exact integers
            return conv_level_maps(layer, x, count_levels)
        S, sign, T = layer.cached('conv_level_pixels', lambda: (
            _pixel_level_weights(layer)))
        numba_kernels()['conv_levels_pixels'](
            numpy.require(x, numpy.uint8, ['C', 'W']).reshape(
                len(x), C, H, Wd), S, T, sign, layer.conv['pool'], out)
        return out
    X = numpy.require(x, numpy.uint8, ['C', 'W'])
    WP, base, slots, spacing, sign, T = layer.cached(
        'conv_level_patches', lambda: _level_patch_weights(layer, -L_a))
    numba_kernels()['conv_levels'](
        X, layer.levels['input_bits'], WP, base, slots, spacing, 4,
        -2 * n_levels(layer.levels['weight_bits']), sign, T,
        layer.conv['pool'], out)
    return out


def _pixel_level_weights(layer):
    """What ``'conv_levels_pixels'`` takes of a layer, made once: the
    signed weights times the channel's sign, ``float32`` ``(K, C, 9)``,
    the signs ``(K,)`` and the thresholds ``int64`` ``(K, levels)``."""
    C = layer.conv['in_shape'][0]
    K = layer.conv['channels']
    sign = numpy.where(layer.flipped.astype(bool), -1, 1).astype(numpy.int64)
    W = signed_weights_of(layer, TAPS * C).reshape(K, TAPS, C).transpose(
        0, 2, 1) * sign[:, None, None]
    return numpy.ascontiguousarray(W, numpy.float32), sign, \
        numpy.ascontiguousarray(layer.thresholds, numpy.int64)


def _level_patch_weights(layer, offset):
    """What ``'conv_levels'`` takes of a layer, made once: the weight
    planes as patch words ``(weight bits, words, K)`` (tap ``t`` at bit
    ``(t % slots) * spacing`` of word ``t // slots``, its channels'
    ``Q`` words one after another above 32 channels, as
    :func:`qnn.packed.conv_kernels._patch_weights` lays out a binarized
    layer's), ``base`` ``(H, W, K)``, ``slots``, ``spacing``, the
    channels' signs (-1 flipped: pooled by the minimum) and the
    thresholds ``(K, levels)``."""
    C, H, Wd = layer.conv['in_shape']
    K = layer.conv['channels']
    weight_bits = layer.levels['weight_bits']
    v = unpack_levels(layer.weights, TAPS * C).reshape(K, TAPS, C)
    Q = -(-C // 64)
    spacing = 1 << max(C - 1, 0).bit_length() if C <= 32 else 64
    slots = 64 // spacing
    WP = numpy.zeros((weight_bits, -(-TAPS // slots) * Q, K), numpy.uint64)
    for c in range(weight_bits):
        words = pack_bits((v >> c) & 1)  # (K, 9, Q)
        for t in range(TAPS):
            shift = numpy.uint64(t % slots * spacing)
            WP[c, t // slots * Q:t // slots * Q + Q] |= words[:, t].T << shift
    L_w = n_levels(weight_bits)
    base = numpy.zeros((H, Wd, K), numpy.int64)
    for t in range(TAPS):
        dy, dx = t // 3 - 1, t % 3 - 1
        inside = numpy.zeros((H, Wd), bool)
        inside[max(0, -dy):min(H, H - dy), max(0, -dx):min(Wd, Wd - dx)] = True
        base += inside[:, :, None] * (2 * offset * v[:, t].sum(axis=1)
                                      - offset * L_w * C)[None, None]
    sign = numpy.where(layer.flipped.astype(bool), -1, 1).astype(numpy.int64)
    return (WP, base, slots, spacing, sign,
            numpy.ascontiguousarray(layer.thresholds, numpy.int64))


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
    ``'count_levels'``, ``'conv_levels'`` and ``'conv_levels_pixels'``,
    built on first use; each runs a batch of fewer images than numba's
    threads on the calling thread
    (:func:`qnn.backends.cpu_kernels.by_batch`)."""
    global _numba
    if _numba is None:
        numba = cpu_kernels.import_numba()
        popcount = xnor_kernels.popcount_intrinsic()
        by_words = {}

        def level_sums(values, bits, WT, *args):
            words = WT.shape[1]
            if words not in by_words:
                by_words[words] = cpu_kernels.by_batch(
                    numba, _level_sums_kernel(
                        numba, popcount, words,
                        numba_plane_packer(numba, words)))
            by_words[words](values, bits, WT, *args)

        def one_core_below_threads(kernel):
            return cpu_kernels.by_batch(numba, kernel)

        _numba = {'level_sums': level_sums,
                  'count_levels': one_core_below_threads(
                      _count_levels_kernel(numba)),
                  'conv_levels': one_core_below_threads(
                      _conv_levels_kernel(numba, popcount)),
                  'conv_levels_pixels': one_core_below_threads(
                      _conv_levels_pixels_kernel(numba))}
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


def _conv_level_steps(numba):
    """The steps of ``'conv_levels'`` for one image, inlined:
    ``input_planes(X, i, bits, Q)``, ``patch_words(U, y, x, first,
    shifts, patch)`` and ``pool_levels(sums, sign, T, step, out)``."""
    lane = numpy.uint64

    @numba.njit(inline='always')
    def input_planes(X, i, bits, Q):
        # the input's bit planes, the channels of a position packed into Q
        # words, a zero border of one position
        B, H, Wd, C = X.shape
        U = numpy.zeros((bits, H + 2, Wd + 2, Q), numpy.uint64)
        for y in range(H):
            for x in range(Wd):
                for c in range(C):
                    u = lane(X[i, y, x, c])
                    for b in range(bits):
                        U[b, y + 1, x + 1, c >> 6] |= (
                            (u >> lane(b)) & lane(1)) << lane(c & 63)
        return U

    @numba.njit(inline='always')
    def patch_words(U, y, x, first, shifts, patch):
        # a position's 9 taps in patch words, plane by plane: tap t's
        # words from first[t] on (indices made once: a division by the
        # slots per tap and position cost more than the popcounts)
        Q = U.shape[3]
        patch[:] = 0
        for b in range(U.shape[0]):
            for t in range(TAPS):
                for q in range(Q):
                    patch[b, first[t] + q] |= U[
                        b, y + t // 3, x + t % 3, q] << shifts[t]

    window = conv_kernels.pooling_window(numba)

    @numba.njit(inline='always')
    def pool_levels(sums, sign, T, step, out):
        # sums (H, W, K) of one image times sign[k], out (H', W', K): the
        # levels of each window's maximum times sign[k]; with cover_all
        # the last window of an odd size reads its one row (column) twice
        H, Wd, K = sums.shape
        for y in range(out.shape[0]):
            for x in range(out.shape[1]):
                y0, y1, x0, x1 = window(y, x, step, H, Wd)
                for k in range(K):
                    best = sign[k] * max(
                        max(sums[y0, x0, k], sums[y0, x1, k]),
                        max(sums[y1, x0, k], sums[y1, x1, k]))
                    n = 0
                    for m in range(T.shape[1]):
                        n += best >= T[k, m]
                    out[y, x, k] = n

    return input_planes, patch_words, pool_levels


def _conv_levels_kernel(numba, popcount):
    """``'conv_levels'``: the output levels of a k-bit convolution
    (:func:`numba_conv_levels`), over the images on all cores."""
    input_planes, patch_words, pool_levels = _conv_level_steps(numba)

    @numba.njit(parallel=True)
    def conv_levels(X, bits, WP, base, slots, spacing, two_a, minus_a_L_w,
                    sign, T, pool, out):
        B, H, Wd, C = X.shape
        weight_bits, words, K = WP.shape
        Q = (C + 63) >> 6
        step = 2 if pool else 1
        shifts = numpy.empty(TAPS, numpy.uint64)
        first = numpy.empty(TAPS, numpy.int64)
        for t in range(TAPS):
            shifts[t] = t % slots * spacing
            first[t] = t // slots * Q
        for i in numba.prange(B):
            U = input_planes(X, i, bits, Q)
            patch = numpy.zeros((bits, words), numpy.uint64)
            sums = numpy.empty((H, Wd, K), numpy.int64)
            acc = numpy.empty(K, numpy.int64)
            for y in range(H):
                for x in range(Wd):
                    patch_words(U, y, x, first, shifts, patch)
                    total = 0
                    for b in range(bits):
                        for w in range(words):
                            total += popcount(patch[b, w]) << b
                    acc[:] = 0
                    for c in range(weight_bits):
                        V = WP[c]
                        for b in range(bits):
                            for w in range(words):
                                p = patch[b, w]
                                for k in range(K):
                                    acc[k] += popcount(p & V[w, k]) << (b + c)
                    s = sums[y, x]
                    for k in range(K):
                        s[k] = sign[k] * (two_a * acc[k] + minus_a_L_w * total
                                          + base[y, x, k])
            pool_levels(sums, sign, T, step, out[i])

    return conv_levels


def _conv_levels_pixels_kernel(numba):
    """``'conv_levels_pixels'``: the output levels of a k-bit convolution
    on pixels (:func:`numba_conv_levels`), over the images on all
    cores."""
    plane_sums = conv_kernels.pixel_plane_sums(numba)
    close_plane, plane_row = conv_kernels.plane_pooling(numba)

    @numba.njit(inline='always')
    def level(s, T, k):
        n = 0
        for m in range(T.shape[1]):
            n += s >= T[k, m]
        return n

    @numba.njit(parallel=True)
    def conv_levels_pixels(P, S, T, sign, pool, out):
        # P (B, C, H, W) uint8; S (K, C, 9) float32, the weights times
        # sign[k]: the maximum pools sign[k] times the layer's sums; one
        # output channel at a time, a row's positions a vector
        B, C, H, Wd = P.shape
        K = S.shape[0]
        H2, W2 = out.shape[1], out.shape[2]
        for b in numba.prange(B):
            p_ = numpy.zeros((C, H + 2, Wd + 2), numpy.float32)
            for c in range(C):
                for y in range(H):
                    for x in range(Wd):
                        p_[c, y + 1, x + 1] = P[b, c, y, x]
            # one row and column more: a copy of the last, so that the
            # last window of an odd size (cover_all) reads it twice
            plane = numpy.empty((H + 1, Wd + 1), numpy.float32)
            rows = numpy.empty(Wd + 1, numpy.float32)
            for k in range(K):
                plane[:] = 0
                for c in range(C):
                    plane_sums(p_[c], S[k, c], plane)
                close_plane(plane, H, Wd)
                for y in range(H2):
                    plane_row(plane, y, Wd, W2, pool, rows)
                    for x in range(W2):
                        out[b, y, x, k] = level(
                            sign[k] * numpy.int64(rows[x]), T, k)

    return conv_levels_pixels

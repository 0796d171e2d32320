"""Kernels of a packed binarized convolution: k x k taps (3x3 unless the
layer's ``conv`` says otherwise), zero padding p (1 unless it says
otherwise), stride 1, then optionally 2x2 max pooling, then the folded
batch normalization and sign.

Layouts (those of :mod:`qnn.packed.format`):

* feature maps of :math:`\\pm 1` values: ``uint64`` ``(B, H, W, words)``,
  the channels of one position packed into
  :math:`\\lceil C / 64 \\rceil` words (channel :math:`c` is bit
  :math:`c \\bmod 64` of word :math:`\\lfloor c / 64 \\rfloor`, 1 is
  :math:`+1`, padding bits 0);
* weights: ``uint64`` ``(K, k^2, words)``, tap :math:`t = k \\, dy + dx`
  reading position :math:`(y + dy - p, x + dx - p)`, the channels packed
  as above;
* pixels (the first layer): ``uint8`` ``(B, C * H * W)``, rows of images
  in channel, row, column order, as the data sets store them.

Borders: the training graph pads its input with 0, which is no
:math:`\\pm 1` value: a tap outside the image adds nothing. So a position's
sum counts only the valid taps, each :math:`C - 2 \\,
\\mathrm{popcount}(X \\oplus W)` over its :math:`C` channels (the padding
bits agree, 0 in both). For pixels the padding is the pixel 0, which adds
nothing either.

Pooling is on the integer sums, before the threshold, as the network pools
before its batch normalization; with ``cover_all`` an odd size rounds up
and the last window holds the positions that exist. A channel whose batch
normalization has :math:`\\gamma < 0` has its weights negated by the
folding (:func:`qnn.packed.folding.fold_sign_from_signs`) and is marked
``flipped``: it pools with the minimum, since the network's maximum of the
sums :math:`a` is the minimum of the negated sums :math:`-a`.

``reference_*`` are the NumPy reference (the taps unpacked to integers);
the numba kernels (the tap-packed patch words and the border base of
``conv_xnor``, the channel-at-a-time pixel convolution: what each does and
costs is in docs/deployment.md, Kernels) and the CUDA ones of
:func:`cupy_layer` are tested equal to it.
"""
import math

import numpy

from qnn.backends import cpu_kernels
from qnn.backends import xnor_kernels
from qnn.packed.bits import WORD_BITS
from qnn.packed.bits import n_words
from qnn.packed.bits import pack_bits
from qnn.packed.bits import unpack_signs
from qnn.packed.dense_kernels import cuda_grid
from qnn.packed.format import DEFAULT_KSIZE
from qnn.packed.format import DEFAULT_PAD
from qnn.packed.format import TAPS
from qnn.packed.format import pooled

# output channels are padded to a multiple of this (one AVX-512 vector of
# int32): the channel loops end with no scalar remainder, and pooling packs
# the bits of a block at a time
LANES = 16


def weight_taps(layer):
    """The weights as ``int64`` :math:`\\pm 1` ``(K, C, k, k)``."""
    channels = layer.conv['in_shape'][0]
    W = unpack_signs(layer.weights, channels)  # (K, k^2, C)
    return W.transpose(0, 2, 1).reshape(len(W), channels, layer.ksize,
                                        layer.ksize)


def conv_sums(x, W, dtype=numpy.int64, pad=1):
    """Integer sums ``(B, K, H', W')`` of the stride-1 convolution of ``x``
    ``(B, C, H, W)`` (integers; 0 in the ``pad`` rows and columns around
    the image) with ``W`` ``(K, C, k, k)``, :math:`H' = H + 2p - k + 1`,
    computed in ``dtype``: ``int64``, or ``float32`` (BLAS) where every
    partial sum is an integer below 2^24, so exact."""
    B, C, H, Wd = x.shape
    k = W.shape[-1]
    padded = numpy.zeros((B, C, H + 2 * pad, Wd + 2 * pad), dtype)
    padded[:, :, pad:pad + H, pad:pad + Wd] = x
    H2, W2 = H + 2 * pad - k + 1, Wd + 2 * pad - k + 1
    W = numpy.asarray(W, dtype)
    sums = numpy.zeros((len(W), B, H2, W2), dtype)
    for dy in range(k):
        for dx in range(k):
            sums += numpy.tensordot(W[:, :, dy, dx],
                                    padded[:, :, dy:dy + H2, dx:dx + W2],
                                    axes=([1], [1]))
    return sums.transpose(1, 0, 2, 3).astype(numpy.int64)


def pool(sums, flipped):
    """2x2 pooling with stride 2 and ``cover_all`` of ``(B, K, H, W)``
    integers: the maximum, the minimum for the ``flipped`` channels (the
    maximum of the negated sums, negated)."""
    B, K, H, Wd = sums.shape
    sign = numpy.where(numpy.asarray(flipped, bool), -1, 1).astype(
        sums.dtype)[None, :, None, None]
    signed = sums * sign
    H2, W2 = pooled(H, True), pooled(Wd, True)
    if (2 * H2, 2 * W2) != (H, Wd):
        # the last window of an odd size holds the positions that exist
        padded = numpy.full((B, K, 2 * H2, 2 * W2),
                            numpy.iinfo(sums.dtype).min, sums.dtype)
        padded[:, :, :H, :Wd] = signed
        signed = padded
    return signed.reshape(B, K, H2, 2, W2, 2).max(axis=(3, 5)) * sign


def reference_sums(layer, x):
    """The layer's integer sums after pooling, ``(B, K, H', W')``: ``x`` is
    ``uint8`` pixels ``(B, C*H*W)`` for ``'conv_pixels'``, feature-map
    words ``(B, H, W, words)`` for ``'conv_xnor'``."""
    C, H, Wd = layer.conv['in_shape']
    if layer.kind == 'conv_pixels':
        values = numpy.asarray(x, numpy.int64).reshape(len(x), C, H, Wd)
    else:
        values = unpack_signs(x, C).transpose(0, 3, 1, 2)
    sums = conv_sums(values, weight_taps(layer), pad=layer.pad)
    return pool(sums, layer.flipped) if layer.conv['pool'] else sums


def reference_layer(layer, x):
    """The layer's output feature map ``(B, H', W', words)``."""
    sums = reference_sums(layer, x)
    bits = sums >= layer.thresholds[None, :, None, None]
    return pack_bits(bits.transpose(0, 2, 3, 1))


def flatten(maps, channels):
    """Feature-map words ``(B, H, W, words)`` as the packed input of a dense
    layer ``(B, ceil(H*W*C / 64))``: value :math:`(y W + x) C + c`."""
    if channels % WORD_BITS == 0:
        return numpy.ascontiguousarray(maps).reshape(len(maps), -1)
    B, H, Wd, _ = maps.shape
    bits = unpack_signs(maps, channels) > 0
    return pack_bits(bits.reshape(B, H * Wd * channels))


# --- numba ------------------------------------------------------------------

_numba = None


def _kernels():
    global _numba
    if _numba is None:
        _numba = _build()
    return _numba


def _build():
    numba = cpu_kernels.import_numba()
    popcount = xnor_kernels.popcount_intrinsic()
    pool_threshold = _pool_threshold(numba)
    by_words = {}
    by_ksize = {}

    def conv_xnor(X, WP, base, slots, spacing, ksize, pad, *args):
        # compiled once for each number of patch words, kernel size and
        # padding (see _conv_xnor)
        key = WP.shape[0], ksize, pad
        if key not in by_words:
            by_words[key] = cpu_kernels.by_batch(numba, _conv_xnor(
                numba, popcount, pool_threshold, *key))
        by_words[key](X, WP, base, slots, spacing, *args)

    def conv_pixels(P, R, pad, *args):
        # compiled once for each kernel size and padding
        key = R.shape[2], pad
        if key not in by_ksize:
            by_ksize[key] = cpu_kernels.by_batch(numba, _conv_pixels(
                numba, pool_threshold, *key))
        by_ksize[key](P, R, *args)

    images = {}

    def image(layer):
        if layer.kind == 'conv_pixels':
            key = layer.kind, layer.ksize, layer.pad
            make = lambda: conv_pixels_image(  # NOQA: E731
                numba, pool_threshold, *key[1:])
        else:
            words = len(numba_arguments(layer)[0])
            key = layer.kind, words, layer.ksize, layer.pad
            make = lambda: conv_xnor_image(  # NOQA: E731
                numba, popcount, pool_threshold, *key[1:])
        if key not in images:
            images[key] = make()
        return images[key]

    return {'conv_xnor': conv_xnor, 'conv_pixels': conv_pixels,
            'image': image}


def pooling_window(numba):
    """``window(y, x, step, H, W)`` for numba code (inlined): the first
    and last rows and columns ``(y0, y1, x0, x1)`` of output position
    ``(y, x)``'s pooling window of ``step`` x ``step`` on ``H`` x ``W``
    sums; with cover_all the last window of an odd size holds one row
    (column): its index clamped, read twice, changes no maximum."""
    @numba.njit(inline='always')
    def window(y, x, step, H, W):
        y0, x0 = y * step, x * step
        return y0, min(y0 + step - 1, H - 1), x0, min(x0 + step - 1, W - 1)
    return window


def _pool_threshold(numba):
    window = pooling_window(numba)

    @numba.njit(inline='always')
    def pool_threshold(sums, T, sign, pool, out):
        # sums (H, W, K) of one image, each channel times its sign[k]
        # (-1 for a flipped channel, whose minimum is -max(-sums)); out
        # (H', W', words), zeroed here.
        H, Wd, K = sums.shape
        step = 2 if pool else 1
        lane = numpy.uint64
        for y in range(out.shape[0]):
            for x in range(out.shape[1]):
                y0, y1, x0, x1 = window(y, x, step, H, Wd)
                s00, s01 = sums[y0, x0], sums[y0, x1]
                s10, s11 = sums[y1, x0], sums[y1, x1]
                word = out[y, x]
                word[:] = 0
                # K is whole blocks of LANES: a fixed loop of LANES bits,
                # its index unsigned (no test for a negative one), is one
                # vector compare whose mask is the bits
                for k0 in range(0, K, LANES):
                    bits = lane(0)
                    for i in range(LANES):
                        k = lane(k0) + lane(i)
                        best = max(max(s00[k], s01[k]), max(s10[k], s11[k]))
                        bits |= lane(sign[k] * best >= T[k]) << lane(i)
                    word[k0 // WORD_BITS] |= bits << lane(k0 % WORD_BITS)

    return pool_threshold


def _conv_xnor(numba, popcount, pool_threshold, words, ksize, pad):
    """The kernel of ``conv_xnor`` layers of ``words`` patch words,
    ``ksize`` x ``ksize`` taps and padding ``pad``: :func:`conv_xnor_image`
    on each image, in parallel."""
    image = conv_xnor_image(numba, popcount, pool_threshold, words, ksize,
                            pad)

    @numba.njit(parallel=True)
    def conv_xnor(X, WP, base, slots, spacing, T, sign, pool, out):
        for b in numba.prange(X.shape[0]):
            image(X[b], WP, base, slots, spacing, T, sign, pool, out[b])

    return conv_xnor


def conv_xnor_image(numba, popcount, pool_threshold, words, ksize, pad):
    """``image(X, WP, base, slots, spacing, T, sign, pool, out)`` for numba
    code (inlined): one image's ``conv_xnor`` layer of ``words`` patch
    words, ``ksize`` x ``ksize`` taps and padding ``pad``, constants of the
    compiled code: the sum over a position's patch words unrolls inside
    the loop over the output channels, in registers (one loop per position
    instead of one per word, which cost the small ConvNet's second layer
    twice its popcounts in loop overhead)."""
    taps = ksize * ksize

    @numba.njit(inline='always')
    def image(X, WP, base, slots, spacing, T, sign, pool, out):
        # X (H, W, Q) words. A position's k^2 taps go into patch words as
        # the weights WP (words, K) are (see _patch_weights): `slots` taps
        # of `spacing` bits a word, so that 16 channels take 3 words, not
        # 9. A tap outside the image reads a zero word: base (H, W, K),
        # the sums of a position before its popcounts, counts its valid
        # taps and gives back what the zero words take (_xnor_base); its
        # (H', W') are the convolution's output positions.
        H, Wd, Q = X.shape
        K = WP.shape[1]
        x_ = numpy.zeros((H + 2 * pad, Wd + 2 * pad, Q), numpy.uint64)
        x_[pad:pad + H, pad:pad + Wd] = X
        sums = base.copy()
        patch = numpy.empty(words, numpy.uint64)
        shifts = numpy.empty(taps, numpy.uint64)
        for t in range(taps):
            shifts[t] = t % slots * spacing
        for y in range(base.shape[0]):
            for x in range(base.shape[1]):
                for w in range(words):
                    patch[w] = 0
                if Q == 1:
                    # no loop over one word (LLVM makes it a vector
                    # loop whose set-up costs more than the word)
                    for t in range(taps):
                        patch[t // slots] |= x_[
                            y + t // ksize, x + t % ksize, 0] << shifts[t]
                else:
                    for t in range(taps):
                        for q in range(Q):
                            patch[t * Q + q] = x_[
                                y + t // ksize, x + t % ksize, q]
                for k in range(K):
                    d = 0
                    for w in range(words):
                        d += popcount(patch[w] ^ WP[w, k])
                    sums[y, x, k] -= 2 * d
        pool_threshold(sums, T, sign, pool, out)

    return image


def _conv_pixels(numba, pool_threshold, ksize=3, pad=1):
    """The kernel of ``conv_pixels`` layers of ``ksize`` x ``ksize`` taps
    and padding ``pad``: :func:`conv_pixels_image` on each image, in
    parallel (the 3x3 one of padding 1 cached on disk)."""
    image = conv_pixels_image(numba, pool_threshold, ksize, pad)

    @numba.njit(parallel=True, cache=(ksize, pad) == (3, 1))
    def conv_pixels(P, R, Rs, T, sign, pool, out):
        for b in numba.prange(P.shape[0]):
            image(P[b], R, Rs, T, sign, pool, out[b])

    return conv_pixels


def conv_pixels_image(numba, pool_threshold, ksize=3, pad=1):
    """``image(P, R, Rs, T, sign, pool, out)`` for numba code (inlined):
    one image's ``conv_pixels`` layer of ``ksize`` x ``ksize`` taps and
    padding ``pad``, constants of the compiled code.

    A row of a channel's taps is one of :math:`2^{k-1}` patterns of signs
    (its first tap +1) times a sign (:func:`_pixel_rows`), so the sums of
    each pattern along the image's rows are taken once for all the output
    channels (:func:`_pattern_rows`), and an output channel adds ``ksize``
    of them a position instead of ``ksize^2`` products (the small
    ConvNet's first layer: 10 us an image, 9 products a position,
    before)."""
    pattern_rows = _pattern_rows(numba, ksize, pad)
    add_rows = _rows_adder(numba, ksize)
    close_plane, plane_row = plane_pooling(numba)

    @numba.njit(inline='always')
    def image(P, R, Rs, T, sign, pool, out):
        # P (C, H, W) uint8; R (K, C, k) int64 and Rs (K, C, k) float32:
        # the pattern and sign of each row of taps, the channel's sign
        # (+-1) in them (the sums are then sign times the layer's, the
        # maximum pools them); out zeroed. In float32, exact: the sums
        # are integers below k^2 C 255 < 2^24. Rows of positions padded
        # to whole vectors (LANES), with a column more for the last
        # window of an odd size (cover_all), which reads its last
        # position twice.
        C, K = P.shape[0], R.shape[0]
        H2, W2 = out.shape[0], out.shape[1]
        H = P.shape[1] + 2 * pad - ksize + 1
        Wd = P.shape[2] + 2 * pad - ksize + 1
        rows = pattern_rows(P, (Wd + LANES) // LANES * LANES)
        plane = numpy.empty((H + 1, rows.shape[3]), numpy.float32)
        pooled_row = numpy.empty(rows.shape[3], numpy.float32)
        # the pooled sums, channels last: thresholds and bits a vector of
        # channels at a time (pool_threshold)
        sums = numpy.zeros((H2, W2, T.shape[0]), numpy.float32)
        for k in range(K):
            plane[:] = 0
            for c in range(C):
                add_rows(plane, rows[c], R[k, c], Rs[k, c], H)
            close_plane(plane, H, Wd)
            for y in range(H2):
                plane_row(plane, y, Wd, W2, pool, pooled_row)
                for x in range(W2):
                    sums[y, x, k] = pooled_row[x]
        pool_threshold(sums, T, sign, False, out)

    return image


def plane_pooling(numba):
    """``close_plane(plane, H, W)`` and ``plane_row(plane, y, W, W2,
    pool, row)`` for numba code (inlined), on one channel's sums
    ``plane`` of ``H`` x ``W`` positions, allocated a row and a column
    larger: ``close_plane`` copies the last row and column into them, so
    that the last window of an odd size (cover_all) reads them twice;
    ``plane_row`` sets ``row[:W2]`` to output row ``y``, the maxima of
    the 2x2 windows (``pool``) or the plane's row (``row`` holds ``W +
    1`` values)."""
    @numba.njit(inline='always')
    def close_plane(plane, H, W):
        for y in range(H):
            plane[y, W] = plane[y, W - 1]
        plane[H] = plane[H - 1]

    @numba.njit(inline='always')
    def plane_row(plane, y, W, W2, pool, row):
        if pool:
            r0, r1 = plane[2 * y], plane[2 * y + 1]
            for x in range(W + 1):
                row[x] = max(r0[x], r1[x])
            # in place: row[x] reads 2x and 2x + 1, never written before
            for x in range(W2):
                row[x] = max(row[2 * x], row[2 * x + 1])
        else:
            for x in range(W2):
                row[x] = plane[y, x]

    return close_plane, plane_row


def _pattern_rows(numba, ksize, pad):
    """``pattern_rows(P, Wv)`` for numba code (inlined): the sums of each
    row pattern (:func:`_row_patterns`) of ``ksize`` taps along the rows
    of the image ``P`` ``(C, H, W)`` zero-padded by ``pad``, ``float32``
    ``(C, patterns, H + 2 pad, Wv)``: ``[c, q, r, x]`` the pattern ``q``
    at column ``x`` of padded row ``r`` (columns past the image read
    zeros)."""
    patterns = _row_patterns(ksize)

    @numba.njit(inline='always')
    def pattern_rows(P, Wv):
        C, Hp = P.shape[0], P.shape[1] + 2 * pad
        p_ = numpy.zeros((C, Hp, Wv + ksize - 1), numpy.float32)
        for c in range(C):
            for y in range(P.shape[1]):
                for x in range(P.shape[2]):
                    p_[c, y + pad, x + pad] = P[c, y, x]
        rows = numpy.empty((C, len(patterns), Hp, Wv), numpy.float32)
        for c in range(C):
            for q in range(len(patterns)):
                for r in range(Hp):
                    h, row = rows[c, q, r], p_[c, r]
                    for x in range(Wv):
                        v = row[x]
                        for dx in range(1, ksize):
                            v += patterns[q, dx] * row[x + dx]
                        h[x] = v
        return rows

    return pattern_rows


def _rows_adder(numba, ksize):
    """``add_rows(plane, rows, R, Rs, H)`` for numba code (inlined): adds
    to ``plane[y]`` the pattern sums ``rows[R[dy], y + dy]`` times
    ``Rs[dy]`` over the ``ksize`` rows of taps, for ``y < H``; one pass
    over the plane for 3x3 taps."""
    if ksize == 3:
        @numba.njit(inline='always')
        def add_rows(plane, rows, R, Rs, H):
            h0, h1, h2 = rows[R[0]], rows[R[1]], rows[R[2]]
            s0, s1, s2 = Rs[0], Rs[1], Rs[2]
            for y in range(H):
                o, r0, r1, r2 = plane[y], h0[y], h1[y + 1], h2[y + 2]
                for x in range(o.shape[0]):
                    o[x] += r0[x] * s0 + r1[x] * s1 + r2[x] * s2
        return add_rows

    @numba.njit(inline='always')
    def add_rows_k(plane, rows, R, Rs, H):
        for dy in range(ksize):
            h, s = rows[R[dy]], Rs[dy]
            for y in range(H):
                o, r = plane[y], h[y + dy]
                for x in range(o.shape[0]):
                    o[x] += r[x] * s
    return add_rows_k


def _row_patterns(ksize):
    """The :math:`2^{k-1}` rows of ``ksize`` signs whose first is +1,
    ``float32`` ``(2^(k-1), k)``: pattern ``q`` has -1 at tap ``d > 0``
    where bit ``d - 1`` of ``q`` is set."""
    q = numpy.arange(1 << (ksize - 1))[:, None]
    d = numpy.arange(1, ksize)[None, :]
    signs = numpy.where(q >> (d - 1) & 1, -1, 1)
    return numpy.hstack([numpy.ones((len(q), 1)), signs]).astype(
        numpy.float32)


def pixel_plane_sums(numba, ksize=3):
    """``plane_sums(p, w, plane)`` for numba code (inlined): adds to
    ``plane`` ``(H, W)`` the ``ksize`` x ``ksize`` sums of the zero-padded
    channel ``p`` ``(H + ksize - 1, W + ksize - 1)`` with the ``ksize^2``
    weights ``w``, a row's positions a vector."""
    if ksize != 3:
        return _plane_sums_k(numba, ksize)

    @numba.njit(inline='always')
    def _plane_sums(p, w, plane):
        # plane[y, x] += the 3x3 sum of the padded channel p at (y, x)
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = (
            w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8])
        for y in range(p.shape[0] - 2):
            r0, r1, r2, o = p[y], p[y + 1], p[y + 2], plane[y]
            for x in range(p.shape[1] - 2):
                o[x] += (r0[x] * w0 + r0[x + 1] * w1 + r0[x + 2] * w2
                         + r1[x] * w3 + r1[x + 1] * w4 + r1[x + 2] * w5
                         + r2[x] * w6 + r2[x + 1] * w7 + r2[x + 2] * w8)

    return _plane_sums


def _plane_sums_k(numba, ksize):
    """:func:`pixel_plane_sums` of any ``ksize``: a row of positions at a
    time, for each tap (its weight held)."""
    @numba.njit(inline='always')
    def _plane_sums(p, w, plane):
        for y in range(p.shape[0] - ksize + 1):
            o = plane[y]
            for dy in range(ksize):
                r = p[y + dy]
                for dx in range(ksize):
                    w_t = w[dy * ksize + dx]
                    for x in range(p.shape[1] - ksize + 1):
                        o[x] += r[x + dx] * w_t

    return _plane_sums


def numba_layer(layer, x):
    """:func:`reference_layer` with the numba kernels."""
    k = _kernels()
    C, H, Wd = layer.conv['in_shape']
    out = numpy.zeros((len(x),) + numba_out_shape(layer), numpy.uint64)
    args = numba_arguments(layer)
    if layer.kind == 'conv_pixels':
        P = numpy.require(x, numpy.uint8, ['C', 'W']).reshape(
            len(x), C, H, Wd)
        k['conv_pixels'](P, args[0], layer.pad, *args[1:], out)
    else:
        X = numpy.require(x, numpy.uint64, ['C', 'W'])
        k['conv_xnor'](X, *args[:4], layer.ksize, layer.pad, *args[4:], out)
    return out


def numba_out_shape(layer):
    """One image's output of the layer, ``(H', W', words)``."""
    K, H2, W2 = layer.out_shape
    return H2, W2, n_words(K)


def numba_arguments(layer):
    """The arguments of the layer's numba kernels between its input and
    its output, made once per layer: ``(R, Rs, T, sign, pool)`` for
    ``'conv_pixels'``, ``(WP, base, slots, spacing, T, sign, pool)`` for
    ``'conv_xnor'``."""
    def make():
        # the channels padded to whole blocks of LANES: a padding channel's
        # weights are 0 and its threshold is never reached (its bits stay
        # 0)
        T = _padded(layer.thresholds.astype(numpy.int32),
                    numpy.iinfo(numpy.int32).max)
        tail = (T, _padded(_signs(layer), 1), bool(layer.conv['pool']))
        if layer.kind == 'conv_pixels':
            return _pixel_rows(layer) + tail
        return _patch_weights(layer) + tail
    return layer.cached('numba_arguments', make)


def numba_image(layer):
    """The layer's one-image step for numba code (inlined),
    :func:`conv_pixels_image` or :func:`conv_xnor_image` compiled for its
    geometry, made once per geometry."""
    return _kernels()['image'](layer)


def _signs(layer):
    """``int32`` -1 for a flipped channel, else 1."""
    return numpy.where(layer.flipped.astype(bool), -1, 1).astype(numpy.int32)


def _pixel_rows(layer):
    """The weights of ``conv_pixels`` as rows of taps (see
    :func:`conv_pixels_image`): the pattern of each row ``(K, C, k)``
    ``int64`` (:func:`_row_patterns`) and its sign ``float32``, each
    weight times its channel's sign."""
    K = layer.out_shape[0]
    C = layer.conv['in_shape'][0]
    k = layer.ksize
    W = weight_taps(layer) * _signs(layer)[:, None, None, None]
    first = W[:, :, :, :1]  # (K, C, k, 1): the sign of each row
    minus = (W * first)[:, :, :, 1:] < 0  # the row over its first tap
    pattern = (minus << numpy.arange(k - 1)).sum(axis=3)
    return (numpy.ascontiguousarray(pattern, numpy.int64).reshape(K, C, k),
            numpy.ascontiguousarray(first[..., 0], numpy.float32))


def _patch_weights(layer):
    """The weights of ``conv_xnor`` as patch words ``(PW, K)`` and the
    popcount of each tap's weights ``(k^2, K)``, with the number of taps per
    word and their spacing in bits. Up to 32 channels, the taps share words
    (spacing: the channels rounded up to a power of two; tap ``t`` at bit
    ``(t % slots) * spacing`` of word ``t // slots``); above, each tap
    takes its ``Q`` words. A flipped channel's weights are complemented on
    its ``C`` channel bits, which negates its sums: the kernel's sums are
    sign times the layer's."""
    C = layer.conv['in_shape'][0]
    W = layer.weights  # (K, k^2, Q)
    K, taps, Q = W.shape
    valid = pack_bits(numpy.ones(C, bool))  # (Q,)
    W = W ^ numpy.where(layer.flipped.astype(bool)[:, None, None], valid,
                        numpy.uint64(0))
    spacing = 1 << max(C - 1, 0).bit_length() if C <= 32 else WORD_BITS
    slots = WORD_BITS // spacing
    WP = numpy.zeros((-(-taps // slots) * Q, K), numpy.uint64)
    for t in range(taps):
        shift = numpy.uint64(t % slots * spacing)
        WP[t // slots * Q:t // slots * Q + Q] |= W[:, t, :].T << shift
    ones = numpy.bitwise_count(W).sum(axis=2, dtype=numpy.int32)  # (K, k^2)
    base = _xnor_base(ones, C, layer.conv['in_shape'][1:], layer.ksize,
                      layer.pad)
    return _padded(WP, 0), base, slots, spacing


def _xnor_base(ones, C, size, ksize=3, pad=1):
    """``base`` of ``conv_xnor`` ``(H', W', K)`` (the convolution's output
    positions of an image of ``size``): a position's sum over its
    valid taps is :math:`C` each less twice the popcounts of the patch; the
    patch's zero words outside the image add ``ones`` (the popcount of the
    tap's weights) to those popcounts, given back here:
    :math:`C \\cdot \\mathrm{valid} + 2 \\sum_{\\mathrm{outside}}
    \\mathrm{ones}`."""
    H, Wd = size
    H2, W2 = H + 2 * pad - ksize + 1, Wd + 2 * pad - ksize + 1
    base = numpy.zeros((H2, W2, len(ones)), numpy.int64)
    for t in range(ksize * ksize):
        # output (y, x) reads the image at (y + dy, x + dx)
        dy, dx = t // ksize - pad, t % ksize - pad
        inside = numpy.zeros((H2, W2), bool)
        inside[max(0, -dy):min(H2, H - dy),
               max(0, -dx):min(W2, Wd - dx)] = True
        base += numpy.where(inside[:, :, None], C, 2 * ones[None, None, :, t])
    return numpy.ascontiguousarray(_padded(base.astype(numpy.int32), 0))


def _padded(a, fill):
    """``a`` with its last axis (the output channels) padded with ``fill``
    to a multiple of :data:`LANES`, C-contiguous."""
    size = -(-a.shape[-1] // LANES) * LANES
    padded = numpy.full(a.shape[:-1] + (size,), fill, a.dtype)
    padded[..., :a.shape[-1]] = a
    return padded


# --- CuPy -------------------------------------------------------------------

# one thread per (image, output position, output channel): the sums of the
# position's pooling window, each over its valid taps, pooled (the minimum
# for a flipped channel), thresholded, the bit set with atomicOr in `out`
# (zeroed before); a third kernel flattens feature maps for a dense layer
CUDA_SOURCE = r'''
extern "C" {
__device__ long long xnor_sum(const unsigned long long* X,
                              const unsigned long long* W, int b, int k,
                              int y, int x, int H, int Wd, int Q, int C) {
    long long s = 0;
    for (int t = 0; t < 9; ++t) {
        int yy = y + t / 3 - 1, xx = x + t % 3 - 1;
        if (yy < 0 || yy >= H || xx < 0 || xx >= Wd) continue;
        const unsigned long long* xp = X + (((long long)b * H + yy) * Wd
                                            + xx) * Q;
        const unsigned long long* wp = W + ((long long)k * 9 + t) * Q;
        int d = 0;
        for (int q = 0; q < Q; ++q) d += __popcll(xp[q] ^ wp[q]);
        s += C - 2 * d;
    }
    return s;
}
__device__ long long pixel_sum(const unsigned char* P, const int* W, int b,
                               int k, int y, int x, int H, int Wd, int C) {
    long long s = 0;
    for (int c = 0; c < C; ++c)
        for (int t = 0; t < 9; ++t) {
            int yy = y + t / 3 - 1, xx = x + t % 3 - 1;
            if (yy < 0 || yy >= H || xx < 0 || xx >= Wd) continue;
            s += (long long)P[(((long long)b * C + c) * H + yy) * Wd + xx]
                 * W[((long long)k * C + c) * 9 + t];
        }
    return s;
}
// X (B, H, W, Q) words or P (B, C, H, W) pixels; W (K, 9, Q) words or
// (K, C, 9) int +-1; out (B, H2, W2, words)
__global__ void conv(const unsigned long long* X, const unsigned char* P,
                     const unsigned long long* WX, const int* WP,
                     const int* T, const int* flipped,
                     unsigned long long* out, int xnor, int B, int C, int H,
                     int Wd, int Q, int K, int H2, int W2, int step,
                     int words) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)B * H2 * W2 * K) return;
    int k = i % K;
    long long r = i / K;
    int x2 = r % W2;
    r /= W2;
    int y2 = r % H2;
    int b = r / H2;
    long long best = 0;
    bool first = true;
    for (int y = y2 * step; y < min(y2 * step + step, H); ++y)
        for (int x = x2 * step; x < min(x2 * step + step, Wd); ++x) {
            long long s = xnor ? xnor_sum(X, WX, b, k, y, x, H, Wd, Q, C)
                               : pixel_sum(P, WP, b, k, y, x, H, Wd, C);
            if (first || (flipped[k] ? s < best : s > best)) best = s;
            first = false;
        }
    if (best >= T[k])
        atomicOr(out + (((long long)b * H2 + y2) * W2 + x2) * words
                 + (k >> 6), 1ULL << (k & 63));
}
// maps (B, positions, Q) to (B, words): value p C + c; out zeroed before
__global__ void flatten(const unsigned long long* maps,
                        unsigned long long* out, int B, int positions,
                        int Q, int C, int words) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)B * positions * C) return;
    int c = i % C;
    long long r = i / C;
    int p = r % positions;
    int b = r / positions;
    if ((maps[((long long)b * positions + p) * Q + (c >> 6)] >> (c & 63))
            & 1ULL) {
        long long v = (long long)p * C + c;
        atomicOr(out + (long long)b * words + (v >> 6), 1ULL << (v & 63));
    }
}
}
'''

_cupy_kernels = None


def _cuda(cupy):
    global _cupy_kernels
    if _cupy_kernels is None:
        module = cupy.RawModule(code=CUDA_SOURCE)
        _cupy_kernels = {name: module.get_function(name)
                         for name in ('conv', 'flatten')}
    return _cupy_kernels


def cupy_layer(layer, x):
    """:func:`reference_layer` on the current CUDA device: ``x`` and the
    result are CuPy arrays. A convolution other than 3x3 with padding 1
    runs on the host (:func:`numba_layer`)."""
    import cupy
    if (layer.ksize, layer.pad) != (DEFAULT_KSIZE, DEFAULT_PAD):
        return cupy.asarray(numba_layer(layer, cupy.asnumpy(x)))
    C, H, Wd = layer.conv['in_shape']
    K, H2, W2 = layer.out_shape
    B = len(x)
    device = cupy.cuda.Device().id

    def on_device(key, make):
        return layer.cached(('device', device, key),
                            lambda: cupy.asarray(make()))

    T = on_device('thresholds', lambda: layer.thresholds.astype(numpy.int32))
    flipped = on_device('flipped', lambda: layer.flipped.astype(numpy.int32))
    out = cupy.zeros((B, H2, W2, n_words(K)), cupy.uint64)
    unused = cupy.zeros(1, cupy.uint64)  # the other kind's arrays
    xnor = layer.kind == 'conv_xnor'
    if xnor:
        X = cupy.ascontiguousarray(x, cupy.uint64)
        arrays = (X, unused, on_device('words', lambda: layer.weights),
                  unused)
    else:
        arrays = (unused, cupy.ascontiguousarray(x, cupy.uint8), unused,
                  on_device('taps', lambda: weight_taps(layer).reshape(
                      K, C * TAPS).astype(numpy.int32)))
    sizes = (xnor, B, C, H, Wd, x.shape[-1] if xnor else 0, K, H2, W2,
             2 if layer.conv['pool'] else 1, n_words(K))
    _cuda(cupy)['conv'](*cuda_grid(B * H2 * W2 * K), arrays + (
        T, flipped, out) + tuple(numpy.int32(v) for v in sizes))
    return out


def cupy_flatten(maps, channels):
    """:func:`flatten` on the current CUDA device."""
    import cupy
    B, H, Wd, Q = maps.shape
    if channels % WORD_BITS == 0:
        return cupy.ascontiguousarray(maps).reshape(B, -1)
    words = n_words(H * Wd * channels)
    out = cupy.zeros((B, words), cupy.uint64)
    _cuda(cupy)['flatten'](*cuda_grid(B * H * Wd * channels), (
        cupy.ascontiguousarray(maps), out, numpy.int32(B),
        numpy.int32(H * Wd), numpy.int32(Q), numpy.int32(channels),
        numpy.int32(words)))
    return out

"""Kernels of a packed binarized convolution: 3x3, padding 1, stride 1,
then optionally 2x2 max pooling, then the folded batch normalization and
sign.

Layouts (those of :mod:`qnn.packed.format`):

* feature maps of :math:`\\pm 1` values: ``uint64`` ``(B, H, W, words)``,
  the channels of one position packed into
  :math:`\\lceil C / 64 \\rceil` words (channel :math:`c` is bit
  :math:`c \\bmod 64` of word :math:`\\lfloor c / 64 \\rfloor`, 1 is
  :math:`+1`, padding bits 0);
* weights: ``uint64`` ``(K, 9, words)``, tap :math:`t = 3 \\, dy + dx`
  reading position :math:`(y + dy - 1, x + dx - 1)`, the channels packed
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
the numba kernels are tested equal to it.
"""
import numpy

from qnn.backends import cpu_kernels
from qnn.packed import kernels
from qnn.packed.format import n_words
from qnn.packed.format import pooled

WORD_BITS = 64
TAPS = 9
# the kernels' channel loops run over blocks of this many channels (one
# AVX-512 vector of int32): a fixed trip count vectorizes with no remainder
# loop, which is where small layers (16 or 32 channels) spent their time
LANES = 16


def unpack_channels(words, channels):
    """``(..., words)`` to ``int64`` :math:`\\pm 1` ``(..., channels)``."""
    bits = kernels.unpack_bits(words, channels)
    return 2 * bits.astype(numpy.int64) - 1


def weight_taps(layer):
    """The weights as ``int64`` :math:`\\pm 1` ``(K, C, 3, 3)``."""
    channels = layer.conv['in_shape'][0]
    W = unpack_channels(layer.weights, channels)  # (K, 9, C)
    return W.transpose(0, 2, 1).reshape(len(W), channels, 3, 3)


def conv_sums(x, W):
    """Integer sums ``(B, K, H, W)`` of the 3x3 convolution of ``x``
    ``(B, C, H, W)`` (integers; 0 outside the image) with ``W``
    ``(K, C, 3, 3)``."""
    B, C, H, Wd = x.shape
    padded = numpy.zeros((B, C, H + 2, Wd + 2), numpy.int64)
    padded[:, :, 1:-1, 1:-1] = x
    sums = numpy.zeros((B, len(W), H, Wd), numpy.int64)
    for dy in range(3):
        for dx in range(3):
            sums += numpy.einsum('bchw,kc->bkhw',
                                 padded[:, :, dy:dy + H, dx:dx + Wd],
                                 W[:, :, dy, dx])
    return sums


def pool(sums, flipped):
    """2x2 pooling with stride 2 and ``cover_all`` of ``(B, K, H, W)``
    integers: the maximum, the minimum for the ``flipped`` channels."""
    B, K, H, Wd = sums.shape
    windows = []
    for fill, reduce in ((numpy.iinfo(numpy.int64).min, numpy.max),
                         (numpy.iinfo(numpy.int64).max, numpy.min)):
        padded = numpy.full((B, K, pooled(H, True) * 2,
                             pooled(Wd, True) * 2), fill, numpy.int64)
        padded[:, :, :H, :Wd] = sums
        windows.append(reduce(padded.reshape(
            B, K, pooled(H, True), 2, pooled(Wd, True), 2), axis=(3, 5)))
    return numpy.where(numpy.asarray(flipped, bool)[None, :, None, None],
                       windows[1], windows[0])


def reference_sums(layer, x):
    """The layer's integer sums after pooling, ``(B, K, H', W')``: ``x`` is
    ``uint8`` pixels ``(B, C*H*W)`` for ``'conv_pixels'``, feature-map
    words ``(B, H, W, words)`` for ``'conv_xnor'``."""
    C, H, Wd = layer.conv['in_shape']
    if layer.kind == 'conv_pixels':
        values = numpy.asarray(x, numpy.int64).reshape(len(x), C, H, Wd)
    else:
        values = unpack_channels(x, C).transpose(0, 3, 1, 2)
    sums = conv_sums(values, weight_taps(layer))
    return pool(sums, layer.flipped) if layer.conv['pool'] else sums


def reference_layer(layer, x):
    """The layer's output feature map ``(B, H', W', words)``."""
    sums = reference_sums(layer, x)
    bits = sums >= layer.thresholds[None, :, None, None]
    return kernels.pack_bits(bits.transpose(0, 2, 3, 1))


def flatten(maps, channels):
    """Feature-map words ``(B, H, W, words)`` as the packed input of a dense
    layer ``(B, ceil(H*W*C / 64))``: value :math:`(y W + x) C + c`."""
    if channels % WORD_BITS == 0:
        return numpy.ascontiguousarray(maps).reshape(len(maps), -1)
    B, H, Wd, _ = maps.shape
    bits = unpack_channels(maps, channels) > 0
    return kernels.pack_bits(bits.reshape(B, H * Wd * channels))


# --- numba ------------------------------------------------------------------

_numba = None


def _kernels():
    global _numba
    if _numba is None:
        _numba = _build()
    return _numba


def _build():
    numba = cpu_kernels.import_numba()
    popcount = kernels._popcount(numba)
    pool_threshold = _pool_threshold(numba)
    return {'conv_xnor': _conv_xnor(numba, popcount, pool_threshold),
            'conv_pixels': _conv_pixels(numba, pool_threshold)}


def _pool_threshold(numba):
    @numba.njit(inline='always')
    def pool_threshold(sums, T, sign, pool, out):
        # sums (H, W, K) of one image, each channel times its sign[k]
        # (-1 for a flipped channel, whose minimum is -max(-sums)); out
        # (H', W', words). Vector loops over the channels.
        H, Wd, K = sums.shape
        step = 2 if pool else 1
        # the bits of a position before packing, whole words of them (0
        # past K): a fixed 64-bit loop per word vectorizes
        bits = numpy.zeros(out.shape[2] * WORD_BITS, numpy.uint64)
        for y in range(out.shape[0]):
            # with cover_all the last window of an odd size holds one row
            # (column): its index clamped, read twice, changes no maximum
            y0 = y * step
            y1 = min(y0 + step - 1, H - 1)
            for x in range(out.shape[1]):
                x0 = x * step
                x1 = min(x0 + step - 1, Wd - 1)
                for k in range(K):
                    best = max(max(sums[y0, x0, k], sums[y0, x1, k]),
                               max(sums[y1, x0, k], sums[y1, x1, k]))
                    bits[k] = sign[k] * best >= T[k]
                for q in range(out.shape[2]):
                    word = numpy.uint64(0)
                    for i in range(WORD_BITS):
                        word |= bits[q * WORD_BITS + i] << numpy.uint64(i)
                    out[y, x, q] = word

    return pool_threshold


def _conv_xnor(numba, popcount, pool_threshold):
    @numba.njit(parallel=True, cache=True)
    def conv_xnor(X, WT, ones, C, T, sign, pool, out):
        # X (B, H, W, Q) words; WT (9, Q, K), output channels last: the
        # inner loop runs over them with the 9 taps' words held. A tap
        # outside the image reads a zero word and counts popcount(W) of
        # its weights, ones[t, k], taken back at the border.
        B, H, Wd, Q = X.shape
        K = WT.shape[2]
        for b in numba.prange(B):
            x_ = numpy.zeros((H + 2, Wd + 2, Q), numpy.uint64)
            x_[1:H + 1, 1:Wd + 1] = X[b]
            sums = numpy.zeros((H, Wd, K), numpy.int32)
            for y in range(H):
                for x in range(Wd):
                    for q in range(Q):
                        w0, w1, w2 = x_[y, x, q], x_[y, x + 1, q], x_[
                            y, x + 2, q]
                        w3, w4, w5 = x_[y + 1, x, q], x_[y + 1, x + 1, q], x_[
                            y + 1, x + 2, q]
                        w6, w7, w8 = x_[y + 2, x, q], x_[y + 2, x + 1, q], x_[
                            y + 2, x + 2, q]
                        for k in range(K):
                            sums[y, x, k] += (
                                popcount(w0 ^ WT[0, q, k])
                                + popcount(w1 ^ WT[1, q, k])
                                + popcount(w2 ^ WT[2, q, k])
                                + popcount(w3 ^ WT[3, q, k])
                                + popcount(w4 ^ WT[4, q, k])
                                + popcount(w5 ^ WT[5, q, k])
                                + popcount(w6 ^ WT[6, q, k])
                                + popcount(w7 ^ WT[7, q, k])
                                + popcount(w8 ^ WT[8, q, k]))
                    valid = 0
                    for t in range(TAPS):
                        yy, xx = y + t // 3 - 1, x + t % 3 - 1
                        if 0 <= yy < H and 0 <= xx < Wd:
                            valid += C
                        else:
                            for k in range(K):
                                sums[y, x, k] -= ones[t, k]
                    for k in range(K):
                        sums[y, x, k] = sign[k] * (valid - 2 * sums[y, x, k])
            pool_threshold(sums, T, sign, pool, out[b])

    return conv_xnor


def _conv_pixels(numba, pool_threshold):
    @numba.njit(parallel=True, cache=True)
    def conv_pixels(P, M, T, sign, pool, out):
        # P (B, C, H, W) uint8; M (C, 9, K) int32: -1 (all bits) where the
        # weight is +1, else 0. p w = 2 (p and M) - p: a mask, not a
        # multiply; the inner loop runs over the channels with the 9
        # pixels of the window held; 0 outside the image adds nothing
        B, C, H, Wd = P.shape
        K = M.shape[2]
        for b in numba.prange(B):
            p_ = numpy.zeros((C, H + 2, Wd + 2), numpy.int32)
            window = numpy.zeros((H, Wd), numpy.int32)
            for c in range(C):
                for y in range(H):
                    for x in range(Wd):
                        p_[c, y + 1, x + 1] = P[b, c, y, x]
            sums = numpy.zeros((H, Wd, K), numpy.int32)
            for c in range(C):
                for y in range(H):
                    for x in range(Wd):
                        p0, p1, p2 = p_[c, y, x], p_[c, y, x + 1], p_[
                            c, y, x + 2]
                        p3, p4, p5 = p_[c, y + 1, x], p_[c, y + 1, x + 1], p_[
                            c, y + 1, x + 2]
                        p6, p7, p8 = p_[c, y + 2, x], p_[c, y + 2, x + 1], p_[
                            c, y + 2, x + 2]
                        window[y, x] += p0 + p1 + p2 + p3 + p4 + p5 + p6 + p7 + p8
                        for k in range(K):
                            sums[y, x, k] += (
                                (p0 & M[c, 0, k]) + (p1 & M[c, 1, k])
                                + (p2 & M[c, 2, k]) + (p3 & M[c, 3, k])
                                + (p4 & M[c, 4, k]) + (p5 & M[c, 5, k])
                                + (p6 & M[c, 6, k]) + (p7 & M[c, 7, k])
                                + (p8 & M[c, 8, k]))
            for y in range(H):
                for x in range(Wd):
                    for k in range(K):
                        sums[y, x, k] = sign[k] * (
                            2 * sums[y, x, k] - window[y, x])
            pool_threshold(sums, T, sign, pool, out[b])

    return conv_pixels


def numba_layer(layer, x):
    """:func:`reference_layer` with the numba kernels."""
    k = _kernels()
    C, H, Wd = layer.conv['in_shape']
    K, H2, W2 = layer.out_shape
    out = numpy.zeros((len(x), H2, W2, n_words(K)), numpy.uint64)
    # the channels padded to whole blocks of LANES: a padding channel's
    # weights are 0 and its threshold is never reached (its bits stay 0)
    T = layer.cached('thresholds', lambda: _padded(
        layer.thresholds.astype(numpy.int32), numpy.iinfo(numpy.int32).max))
    sign = layer.cached('sign', lambda: _padded(numpy.where(
        layer.flipped.astype(bool), -1, 1).astype(numpy.int32), 1))
    if layer.kind == 'conv_pixels':
        P = numpy.require(x, numpy.uint8, ['C', 'W']).reshape(
            len(x), C, H, Wd)
        M = layer.cached('masks', lambda: _padded(numpy.where(
            weight_taps(layer).reshape(K, C, TAPS).transpose(1, 2, 0) > 0,
            -1, 0).astype(numpy.int32), 0))
        k['conv_pixels'](P, M, T, sign, layer.conv['pool'], out)
    else:
        X = numpy.require(x, numpy.uint64, ['C', 'W'])
        WT = layer.cached('taps', lambda: _padded(
            layer.weights.transpose(1, 2, 0), 0))
        ones = layer.cached('tap_ones', lambda: numpy.bitwise_count(
            WT).sum(axis=1, dtype=numpy.int32))
        k['conv_xnor'](X, WT, ones, C, T, sign, layer.conv['pool'], out)
    return out


def _padded(a, fill):
    """``a`` with its last axis (the output channels) padded with ``fill``
    to a multiple of :data:`LANES`, C-contiguous."""
    size = -(-a.shape[-1] // LANES) * LANES
    padded = numpy.full(a.shape[:-1] + (size,), fill, a.dtype)
    padded[..., :a.shape[-1]] = a
    return padded

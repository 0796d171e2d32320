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

    @numba.njit(inline='always')
    def pool_threshold(sums, T, sign, pool, out):
        # sums (H, W, K) of one image; out (H', W', words) zeroed; sign[k]
        # -1 for a flipped channel: its minimum is -max(-sums)
        H, Wd, K = sums.shape
        step = 2 if pool else 1
        for y in range(out.shape[0]):
            for x in range(out.shape[1]):
                y1, x1 = min(y * step + step, H), min(x * step + step, Wd)
                for k in range(K):
                    m = sign[k] * sums[y * step, x * step, k]
                    for yy in range(y * step, y1):
                        for xx in range(x * step, x1):
                            m = max(m, sign[k] * sums[yy, xx, k])
                    if sign[k] * m >= T[k]:
                        out[y, x, k >> 6] |= numpy.uint64(1) << numpy.uint64(
                            k & 63)

    @numba.njit(inline='always')
    def valid(d, size):
        # the output rows (or columns) whose tap at offset d - 1 is inside
        return max(0, 1 - d), min(size, size + 1 - d)

    @numba.njit(parallel=True, cache=True)
    def conv_xnor(X, WT, C, T, sign, pool, out):
        # X (B, H, W, Q) words; WT (9, Q, K): the channels' words of each
        # tap, output channels last, so that the inner loop runs over them;
        # tap by tap over the positions it reaches (no test per position)
        B, H, Wd, Q = X.shape
        K = WT.shape[2]
        for b in numba.prange(B):
            sums = numpy.zeros((H, Wd, K), numpy.int32)
            for t in range(TAPS):
                dy, dx = t // 3, t % 3
                y0, y1 = valid(dy, H)
                x0, x1 = valid(dx, Wd)
                for y in range(y0, y1):
                    for x in range(x0, x1):
                        for k in range(K):
                            sums[y, x, k] += C
                        for q in range(Q):
                            word = X[b, y + dy - 1, x + dx - 1, q]
                            for k in range(K):
                                sums[y, x, k] -= 2 * popcount(
                                    word ^ WT[t, q, k])
            pool_threshold(sums, T, sign, pool, out[b])

    @numba.njit(parallel=True, cache=True)
    def conv_pixels(P, M, T, sign, pool, out):
        # P (B, C, H, W) uint8; M (C, 9, K) int32: -1 (all bits) where the
        # weight is +1, else 0. p w = 2 (p and M) - p: a mask, not a
        # multiply, per weight; the pixels' window sum once per position
        B, C, H, Wd = P.shape
        K = M.shape[2]
        for b in numba.prange(B):
            sums = numpy.zeros((H, Wd, K), numpy.int32)
            window = numpy.zeros((H, Wd), numpy.int32)
            for c in range(C):
                for t in range(TAPS):
                    dy, dx = t // 3, t % 3
                    y0, y1 = valid(dy, H)
                    x0, x1 = valid(dx, Wd)
                    for y in range(y0, y1):
                        for x in range(x0, x1):
                            p = numpy.int32(P[b, c, y + dy - 1, x + dx - 1])
                            window[y, x] += p
                            for k in range(K):
                                sums[y, x, k] += p & M[c, t, k]
            for y in range(H):
                for x in range(Wd):
                    for k in range(K):
                        sums[y, x, k] = 2 * sums[y, x, k] - window[y, x]
            pool_threshold(sums, T, sign, pool, out[b])

    return {'conv_xnor': conv_xnor, 'conv_pixels': conv_pixels}


def numba_layer(layer, x):
    """:func:`reference_layer` with the numba kernels."""
    k = _kernels()
    C, H, Wd = layer.conv['in_shape']
    K, H2, W2 = layer.out_shape
    out = numpy.zeros((len(x), H2, W2, n_words(K)), numpy.uint64)
    T = layer.cached('thresholds', lambda: numpy.ascontiguousarray(
        layer.thresholds, numpy.int32))
    sign = layer.cached('sign', lambda: numpy.where(
        layer.flipped.astype(bool), -1, 1).astype(numpy.int32))
    if layer.kind == 'conv_pixels':
        P = numpy.require(x, numpy.uint8, ['C', 'W']).reshape(
            len(x), C, H, Wd)
        M = layer.cached('masks', lambda: numpy.ascontiguousarray(
            numpy.where(weight_taps(layer).reshape(K, C, TAPS).transpose(
                1, 2, 0) > 0, -1, 0), numpy.int32))
        k['conv_pixels'](P, M, T, sign, layer.conv['pool'], out)
    else:
        X = numpy.require(x, numpy.uint64, ['C', 'W'])
        WT = layer.cached('taps', lambda: numpy.ascontiguousarray(
            layer.weights.transpose(1, 2, 0)))
        k['conv_xnor'](X, WT, C, T, sign, layer.conv['pool'], out)
    return out

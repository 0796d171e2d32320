"""XNOR/AND-popcount kernels of a packed binarized network.

Bits and words (the layout of :mod:`qnn.packed.format` files too): a vector of
:math:`n` values :math:`\\pm 1` is :math:`\\lceil n / 64 \\rceil` unsigned
64-bit words; value :math:`i` is bit :math:`i \\bmod 64` (0: least
significant) of word :math:`\\lfloor i / 64 \\rfloor`; bit 1 means
:math:`+1`, bit 0 means :math:`-1`; the padding bits
:math:`n \\dots 64 \\lceil n/64 \\rceil - 1` are 0 in weights and in
activations alike.

Products, with :math:`h, w \\in \\{\\pm 1\\}^n` packed to words
:math:`H, W`:

.. math::

    h \\cdot w = n - 2 \\, \\mathrm{popcount}(H \\oplus W)

(each differing position counts :math:`-1` instead of :math:`+1`; padding
is 0 in both, so it never differs). For 8-bit pixels :math:`p_i =
\\sum_b 2^b p_{i,b}`, with bit plane :math:`P_b` packed like an activation
(bit 1 where :math:`p_{i,b} = 1`):

.. math::

    p \\cdot w = \\sum_{b=0}^{7} 2^b \\left(2 \\, \\mathrm{popcount}(P_b
    \\wedge W) - \\mathrm{popcount}(P_b)\\right)

since :math:`\\sum_i p_{i,b} w_i` counts the set pixel bits under a
:math:`+1` weight minus those under a :math:`-1` weight. Every sum is an
exact integer.

A layer ``'sign'`` turns each unit's sum :math:`a_j` into the bit
:math:`[a_j \\ge T_j]` of the next layer's input (the batch normalization
and sign folded by :mod:`qnn.packed.folding`); the last layer returns the sums.

Three implementations of the same arithmetic:

* ``'numpy'``: the reference, with :func:`numpy.bitwise_count` on the packed
  words, a few images at a time;
* ``'numba'``: ``@njit(parallel=True)`` loops over the images on all cores
  (``numba.set_num_threads`` chooses how many), tested equal to the
  reference;
* ``'cupy'``: CUDA ``RawKernel`` s with ``__popcll``, one thread per image
  and unit. They compile only where CuPy and a GPU are; this project's
  GPU-marked tests check them against the reference there.
"""
import sys

import numpy

from qnn.backends import cpu_kernels
from qnn.backends import xnor_kernels
from qnn.packed import conv_kernels
from qnn.packed import levels
from qnn.packed.format import CONV_KINDS
from qnn.packed.format import LEVEL_KINDS
from qnn.packed.format import WORD_BITS
from qnn.packed.format import n_words

PIXEL_BITS = 8


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


def pixel_planes(pixels):
    """Bit planes of 8-bit pixels ``(B, n)``: ``uint64`` ``(B, 8, words)``,
    plane ``b`` holding bit ``b`` of every pixel."""
    pixels = numpy.asarray(pixels, dtype=numpy.uint8)
    shifts = numpy.arange(PIXEL_BITS, dtype=numpy.uint8)
    planes = (pixels[:, None, :] >> shifts[None, :, None]) & 1
    return pack_bits(planes)


# --- NumPy reference ------------------------------------------------------

# images per step of the reference: bounds its (chunk, units, words)
# temporaries to a few MB
_CHUNK = 64


def _reference_planes(pixels, W, n_in):
    planes = pixel_planes(pixels)
    out = numpy.empty((len(pixels), W.shape[0]), numpy.int64)
    weights = (numpy.int64(1) << numpy.arange(PIXEL_BITS, dtype=numpy.int64))
    for lo in range(0, len(pixels), _CHUNK):
        P = planes[lo:lo + _CHUNK]
        ones = numpy.bitwise_count(P).sum(axis=-1, dtype=numpy.int64)
        both = numpy.bitwise_count(P[:, :, None, :] & W[None, None]).sum(
            axis=-1, dtype=numpy.int64)  # (chunk, 8, units)
        out[lo:lo + _CHUNK] = numpy.einsum(
            'cbu,b->cu', 2 * both - ones[:, :, None], weights)
    return out


def _reference_xnor(X, W, n_in):
    out = numpy.empty((len(X), W.shape[0]), numpy.int64)
    for lo in range(0, len(X), _CHUNK):
        d = numpy.bitwise_count(X[lo:lo + _CHUNK, None, :] ^ W[None]).sum(
            axis=-1, dtype=numpy.int64)
        out[lo:lo + _CHUNK] = n_in - 2 * d
    return out


def _run_levels(layers, x, sums_of, output_levels=None):
    """A network of k-bit layers (:mod:`qnn.packed.levels`): the last
    layer's integer sums."""
    output_levels = output_levels or levels.output_levels
    for layer in layers:
        if layer.kind in CONV_KINDS:
            x = levels.conv_level_maps(layer, x, output_levels)
            continue
        # maps flattened in (row, column, channel) order
        x = numpy.ascontiguousarray(x).reshape(len(x), -1)
        sums = numpy.asarray(sums_of(layer, x)).astype(numpy.int64)
        if layer.output != 'levels':
            return sums
        x = output_levels(sums, layer.thresholds)
    raise ValueError('the network has no output layer')


def _reference(layer_sums, layers, x):
    if layers[0].kind in LEVEL_KINDS:
        return _run_levels(layers, x, levels.reference_sums)
    for index, layer in enumerate(layers):
        if layer.kind in CONV_KINDS:
            x = conv_kernels.reference_layer(layer, x)
            continue
        x = _dense_input(layers, index, x)
        sums = layer_sums[layer.kind](x, layer.weights, layer.n_in)
        if layer.output == 'sign':
            x = pack_bits(sums >= layer.thresholds)
        else:
            return sums
    raise ValueError('the network has no output layer')


# --- numba ------------------------------------------------------------------

_numba = None


def _build_numba():
    """The numba kernels by name (built once, on first use: numba is
    imported only by a user of this path). ``'planes'`` and ``'network'``
    are compiled once for each number of words of the first layer's input
    (see :func:`_plane_helpers`)."""
    numba = cpu_kernels.import_numba()
    popcount = xnor_kernels.popcount_intrinsic()
    kernels = {'xnor': xnor_kernels.get()['xnor']}
    kernels['threshold_pack'] = _threshold_pack_kernel(numba)
    by_words = {}

    def for_words(words):
        if words not in by_words:
            helpers = _plane_helpers(numba, popcount, words)
            by_words[words] = (_planes_kernel(numba, *helpers),
                               _network_kernel(numba, popcount, *helpers),
                               _levels_kernel(numba, popcount, words,
                                              helpers[0]))
        return by_words[words]

    def planes(pixels, WT, sums):
        for_words(WT.shape[0])[0](pixels, WT, sums)

    def network(pixels, W1T, *args):
        for_words(W1T.shape[0])[1](pixels, W1T, *args)

    def level_sums(values, bits, WT, *args):
        for_words(WT.shape[1])[2](values, bits, WT, *args)

    kernels['planes'] = planes
    kernels['network'] = network
    kernels['level_sums'] = level_sums
    kernels['count_levels'] = _count_levels_kernel(numba)
    return kernels


def _plane_helpers(numba, popcount, words):
    """The first layer's steps for one image of ``words`` words, inlined in
    the kernels: ``pack_planes(pixels, i, bits=8)``, the bit planes
    ``(bits, words)`` of image ``i``, and ``planes_acc(P, WT, acc)``, which adds
    :math:`\\sum_b 2^b \\mathrm{popcount}(P_b \\wedge W_j)` to ``acc[j]``
    and returns :math:`\\sum_b 2^b \\mathrm{popcount}(P_b)`.

    ``words`` is a constant of the compiled code: the sum over the words of
    a plane unrolls inside a loop over the units, which vectorizes (one
    VPOPCNTQ for 8 units on AVX-512) with the sum in a register; the
    loop over the words outermost kept it in memory (1.5x slower on the
    first layer of the MLP, 2-core AMD EPYC, 2026-12-06)."""
    @numba.njit(inline='always')
    def pack_planes(pixels, i, bits=PIXEL_BITS):
        # the row zero padded to whole words; a fixed 64-bit loop per word
        # and plane vectorizes (an OR reduction)
        row = numpy.zeros(words * WORD_BITS, numpy.uint64)
        for k in range(pixels.shape[1]):
            row[k] = pixels[i, k]
        P = numpy.empty((bits, words), numpy.uint64)
        for b in range(bits):
            for k in range(words):
                word = numpy.uint64(0)
                for bit in range(WORD_BITS):
                    word |= ((row[k * WORD_BITS + bit] >> numpy.uint64(b))
                             & numpy.uint64(1)) << numpy.uint64(bit)
                P[b, k] = word
        return P

    @numba.njit(inline='always')
    def planes_acc(P, WT, acc):
        ones = 0
        for b in range(PIXEL_BITS):
            for k in range(words):
                ones += popcount(P[b, k]) << b
            for j in range(WT.shape[1]):
                d = 0
                for k in range(words):
                    d += popcount(P[b, k] & WT[k, j])
                acc[j] += d << b
        return ones

    return pack_planes, planes_acc


def _planes_kernel(numba, pack_planes, planes_acc):
    """``'planes'``: the sums of a first layer, over the images on all
    cores."""
    @numba.njit(parallel=True)
    def planes_sums(pixels, WT, sums):
        # pixels (B, n) uint8; WT (words, units): the weights transposed so
        # that the inner loop runs over units (contiguous, vectorized)
        B = pixels.shape[0]
        M = WT.shape[1]
        for i in numba.prange(B):
            P = pack_planes(pixels, i)
            acc = numpy.zeros(M, numpy.int64)
            ones = planes_acc(P, WT, acc)
            for j in range(M):
                sums[i, j] = 2 * acc[j] - ones

    return planes_sums


def _levels_kernel(numba, popcount, words, pack_planes):
    """``'level_sums'``: for k-bit values :math:`x` (pixels or level
    indices, ``bits`` planes) and weight level indices :math:`v` stored as
    planes ``WT`` ``(weight bits, words, units)``, the sums
    :math:`\\alpha P_j + \\beta X + \\gamma_j` of the products
    :math:`P_j = \\sum_i x_i v_{ij} = \\sum_{b, c} 2^{b + c}
    \\mathrm{popcount}(X_b \\wedge V_{c,j})` (one popcount per pair of
    planes and word) and the image's total :math:`X = \\sum_i x_i`, over
    the images on all cores (:func:`qnn.packed.levels.popcount_sums` gives
    the coefficients)."""
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


def _threshold_pack_kernel(numba):
    """``'threshold_pack'``: a layer's output bits
    :math:`[a_j \\ge T_j]` from its sums, packed, over the images on all
    cores. ``T`` is padded to whole words with a value no sum reaches
    (:func:`_word_thresholds`): a word's 64 bits come from one fixed loop,
    vectorized, with no branch per unit (whose mispredictions, the bits
    being as good as random, cost more than the popcounts)."""
    @numba.njit(parallel=True)
    def threshold_pack(sums, T, out):
        lane = numpy.uint64
        B, M = sums.shape
        last = lane(M - 1)
        for i in numba.prange(B):
            row = sums[i]
            for q in range(out.shape[1]):
                word = lane(0)
                for bit in range(WORD_BITS):
                    j = lane(q << 6) + lane(bit)
                    word |= lane(row[min(j, last)] >= T[j]) << lane(bit)
                out[i, q] = word

    return threshold_pack


def _network_kernel(numba, popcount, pack_planes, planes_acc):
    """``'network'``: the sums of the last layer of a network of a
    ``'planes'`` layer, ``'xnor'`` ones and an output layer."""
    @numba.njit(parallel=True)
    def network_sums(pixels, W1T, T1, hidden_WT, hidden_T, last_WT, n_ins,
                     sums):
        # the whole network in one parallel region, one image per
        # iteration: one fork and join per call instead of two per layer
        # (on a loaded machine each join waits for a descheduled thread),
        # and each image's activations stay in the core's cache
        # the thresholds T1 and hidden_T come padded to whole words with
        # a value no sum reaches, so that the bits are packed a word at a
        # time by a fixed loop of 64 (vectorized; its index unsigned, with
        # no test for a negative one)
        lane = numpy.uint64
        B = pixels.shape[0]
        widest = T1.shape[0]
        for T in hidden_T:
            widest = max(widest, T.shape[0])
        for i in numba.prange(B):
            P = pack_planes(pixels, i)
            acc = numpy.zeros(widest, numpy.int64)
            ones = planes_acc(P, W1T, acc)
            h = numpy.zeros(widest >> 6, numpy.uint64)
            for q in range(T1.shape[0] >> 6):
                word = lane(0)
                for bit in range(WORD_BITS):
                    j = lane(q << 6) + lane(bit)
                    word |= lane(2 * acc[j] - ones >= T1[j]) << lane(bit)
                h[q] = word
            for layer in range(len(hidden_WT)):
                WT = hidden_WT[layer]
                T = hidden_T[layer]
                M = WT.shape[1]
                acc[:M] = 0
                for k in range(WT.shape[0]):
                    x = h[k]
                    for j in range(M):
                        acc[j] += popcount(x ^ WT[k, j])
                n_in = n_ins[layer + 1]
                for q in range(T.shape[0] >> 6):
                    word = lane(0)
                    for bit in range(WORD_BITS):
                        j = lane(q << 6) + lane(bit)
                        word |= lane(n_in - 2 * acc[j] >= T[j]) << lane(bit)
                    h[q] = word
            M = last_WT.shape[1]
            for j in range(M):
                d = 0
                for k in range(last_WT.shape[0]):
                    d += popcount(h[k] ^ last_WT[k, j])
                sums[i, j] = n_ins[len(n_ins) - 1] - 2 * d

    return network_sums


def _numba_kernels():
    global _numba
    if _numba is None:
        _numba = _build_numba()
    return _numba


def _dense_input(layers, index, x):
    """``x`` as the packed input of the dense layer ``layers[index]``:
    flattened if the layer before it is a convolution."""
    if index and layers[index - 1].kind in CONV_KINDS:
        return conv_kernels.flatten(x, layers[index - 1].conv['channels'])
    return x


def _run_numba(layers, pixels):
    k = _numba_kernels()
    # writable too: numba compiles a separate (slow to build) version of
    # each kernel for read-only arrays such as numpy.frombuffer's
    x = numpy.require(pixels, numpy.uint8, ['C', 'W'])
    hidden = layers[1:-1]
    if layers[0].kind in LEVEL_KINDS:
        return _run_levels(layers, x, levels.popcount_sums,
                           levels.count_levels)
    if any(layer.kind in CONV_KINDS for layer in layers):
        return _run_numba_layers(k, layers, x)
    if hidden and layers[-1].output != 'sign' and all(
            layer.output == 'sign' for layer in layers[:-1]):
        sums = numpy.empty((len(x), layers[-1].n_out), numpy.int64)
        k['network'](
            x, layers[0].transposed_weights(), _word_thresholds(layers[0]),
            tuple(layer.transposed_weights() for layer in hidden),
            tuple(_word_thresholds(layer) for layer in hidden),
            layers[-1].transposed_weights(),
            numpy.array([layer.n_in for layer in layers], numpy.int64), sums)
        return sums
    # layer by layer: a network of two layers (no hidden XNOR layer)
    return _run_numba_layers(k, layers, x)


def _word_thresholds(layer):
    """The layer's thresholds as ``int64``, padded to whole words with a
    value no sum reaches (made once)."""
    def make():
        T = numpy.full(n_words(layer.n_out) * WORD_BITS,
                       numpy.iinfo(numpy.int64).max, numpy.int64)
        T[:layer.n_out] = layer.thresholds
        return T
    return layer.cached('word_thresholds', make)


def _run_numba_layers(k, layers, x):
    for index, layer in enumerate(layers):
        if layer.kind in CONV_KINDS:
            x = conv_kernels.numba_layer(layer, x)
            continue
        x = numpy.require(_dense_input(layers, index, x), requirements=[
            'C', 'W'])
        WT = layer.transposed_weights()
        sums = numpy.empty((len(x), layer.n_out), numpy.int64)
        if layer.kind == 'planes':
            k['planes'](x, WT, sums)
        else:
            k['xnor'](x, WT, layer.n_in, sums)
        if layer.output != 'sign':
            return sums
        x = numpy.empty((len(sums), n_words(layer.n_out)), numpy.uint64)
        k['threshold_pack'](sums, _word_thresholds(layer), x)
    raise ValueError('the network has no output layer')


# --- CuPy -------------------------------------------------------------------

_CUDA_SOURCE = r'''
extern "C" {
// one thread per (image, unit); P: (B, 8, K) bit planes, W: (M, K)
__global__ void planes_sums(const unsigned long long* P,
                            const unsigned long long* W,
                            long long* sums, int B, int M, int K) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long long)B * M) return;
    int i = t / M, j = t % M;
    long long s = 0;
    for (int b = 0; b < 8; ++b) {
        const unsigned long long* p = P + ((long long)i * 8 + b) * K;
        const unsigned long long* w = W + (long long)j * K;
        long long both = 0, ones = 0;
        for (int k = 0; k < K; ++k) {
            both += __popcll(p[k] & w[k]);
            ones += __popcll(p[k]);
        }
        s += (2 * both - ones) << b;
    }
    sums[t] = s;
}
// X: (B, K) activations, W: (M, K)
__global__ void xnor_sums(const unsigned long long* X,
                          const unsigned long long* W,
                          long long* sums, int B, int M, int K, int n_in) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long long)B * M) return;
    int i = t / M, j = t % M;
    const unsigned long long* x = X + (long long)i * K;
    const unsigned long long* w = W + (long long)j * K;
    long long d = 0;
    for (int k = 0; k < K; ++k) d += __popcll(x[k] ^ w[k]);
    sums[t] = n_in - 2 * d;
}
// out (B, words) zeroed before; one thread per (image, unit)
__global__ void threshold_pack(const long long* sums, const int* T,
                               unsigned long long* out, int B, int M,
                               int words) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long long)B * M) return;
    int i = t / M, j = t % M;
    if (sums[t] >= T[j])
        atomicOr(out + (long long)i * words + (j >> 6),
                 1ULL << (j & 63));
}
}
'''

_cupy_kernels = None


def _run_cupy(layers, pixels):
    if any(layer.kind in LEVEL_KINDS for layer in layers):
        raise ValueError('no CUDA kernels for k-bit layers: run it on the '
                         'CPU (--device -1)')
    import cupy
    global _cupy_kernels
    if _cupy_kernels is None:
        module = cupy.RawModule(code=_CUDA_SOURCE)
        _cupy_kernels = {name: module.get_function(name) for name in (
            'planes_sums', 'xnor_sums', 'threshold_pack')}
    k = _cupy_kernels
    threads = 256
    x = cupy.asarray(pixels, dtype=cupy.uint8)
    B = len(x)
    for index, layer in enumerate(layers):
        if layer.kind in CONV_KINDS:
            x = conv_kernels.cupy_layer(layer, x)
            continue
        if index and layers[index - 1].kind in CONV_KINDS:
            x = conv_kernels.cupy_flatten(x, layers[index - 1].conv[
                'channels'])
        W = layer.device_weights(cupy)
        M, K = W.shape
        sums = cupy.empty((B, M), cupy.int64)
        blocks = ((B * M + threads - 1) // threads,)
        if layer.kind == 'planes':
            # the bit planes are packed on the GPU
            shifts = cupy.arange(PIXEL_BITS, dtype=cupy.uint8)
            P = pack_bits((x[:, None, :] >> shifts[None, :, None]) & 1)
            k['planes_sums'](blocks, (threads,), (
                cupy.ascontiguousarray(P), W, sums, numpy.int32(B),
                numpy.int32(M), numpy.int32(K)))
        else:
            k['xnor_sums'](blocks, (threads,), (
                x, W, sums, numpy.int32(B), numpy.int32(M), numpy.int32(K),
                numpy.int32(layer.n_in)))
        if layer.output != 'sign':
            return sums
        x = cupy.zeros((B, n_words(M)), cupy.uint64)
        k['threshold_pack'](blocks, (threads,), (
            sums, cupy.asarray(layer.thresholds, cupy.int32), x,
            numpy.int32(B), numpy.int32(M), numpy.int32(n_words(M))))
    raise ValueError('the network has no output layer')


def layer_sums(layers, pixels, backend='numba'):
    """Runs the packed layers on 8-bit pixels ``(B, n)`` and returns the
    integer sums of the last layer's units ``(B, units)`` (``int64``; a
    CuPy array for ``'cupy'``).

    Args:
        layers: :class:`qnn.packed.format.Layer` s, the first of kind
            ``'planes'``, the others ``'xnor'``, all ``'sign'`` but the last.
        pixels (ndarray): ``uint8`` images, one per row.
        backend (str): ``'numba'``, ``'numpy'`` or ``'cupy'``.
    """
    if backend == 'numpy':
        return _reference({'planes': _reference_planes,
                           'xnor': _reference_xnor},
                          layers, numpy.asarray(pixels, numpy.uint8))
    if backend == 'numba':
        return _run_numba(layers, pixels)
    if backend == 'cupy':
        return _run_cupy(layers, pixels)
    raise ValueError('unknown backend {!r}'.format(backend))


def sign_layer(layer, x, backend='numba'):
    """Output bits ``bool`` ``(B, n_out)`` of one ``'sign'`` layer: ``x``
    is ``uint8`` pixels for ``'planes'``, packed words for ``'xnor'``."""
    if backend == 'numpy':
        sums = (_reference_planes if layer.kind == 'planes'
                else _reference_xnor)(x, layer.weights, layer.n_in)
        return sums >= layer.thresholds
    k = _numba_kernels()
    x = numpy.require(x, numpy.uint8 if layer.kind == 'planes'
                      else numpy.uint64, ['C', 'W'])
    sums = numpy.empty((len(x), layer.n_out), numpy.int64)
    if layer.kind == 'planes':
        k['planes'](x, layer.transposed_weights(), sums)
    else:
        k['xnor'](x, layer.transposed_weights(), layer.n_in, sums)
    out = numpy.empty((len(x), n_words(layer.n_out)), numpy.uint64)
    k['threshold_pack'](sums, _word_thresholds(layer), out)
    return unpack_bits(out, layer.n_out)


def affine_logits(sums, layer):
    """Logits of the output ``layer`` (``'affine'``) from its integer sums,
    in the float32 order of Chainer's ``fixed_batch_normalization``:
    ``((a - mean) * inv_std) * gamma + beta`` (NumPy or CuPy)."""
    xp = numpy if isinstance(sums, numpy.ndarray) else _cupy()
    x = sums.astype(numpy.float32)
    for name, op in (('mean', xp.subtract), ('inv_std', xp.multiply),
                     ('gamma', xp.multiply), ('beta', xp.add)):
        op(x, xp.asarray(getattr(layer, name)), out=x)
    return x


def _cupy():
    import cupy
    return cupy


def forward(network, pixels, backend='numba'):
    """Logits ``(B, classes)`` of the packed ``network`` for ``uint8``
    ``pixels`` ``(B, n)``."""
    return affine_logits(layer_sums(network.layers, pixels, backend),
                         network.layers[-1])


def warm_up(layers, pixels, backend='numba'):
    """Runs ``layers`` once on the first two images, so that the kernels of
    ``backend`` are compiled (numba, CUDA) before anything is timed."""
    layer_sums(layers, pixels[:2], backend)

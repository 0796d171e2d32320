"""XNOR/AND-popcount kernels of packed dense layers.

Products, with :math:`h, w \\in \\{\\pm 1\\}^n` packed to words
:math:`H, W` (:mod:`qnn.packed.bits`):

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
and sign folded by :mod:`qnn.packed.folding`); the last layer returns the
sums.

Three implementations of the same arithmetic:

* the NumPy reference (:func:`reference_planes`, :func:`reference_xnor`),
  with :func:`numpy.bitwise_count` on the packed words, a few images at a
  time;
* numba (:func:`numba_kernels`): ``@njit(parallel=True)`` loops over the
  images on all cores, tested equal to the reference;
* CUDA (:func:`cupy_kernels`): ``RawKernel`` s with ``__popcll``, one
  thread per image and unit. They compile only where CuPy and a GPU are;
  this project's GPU-marked tests check them against the reference there.
"""
import numpy

from qnn.backends import cpu_kernels
from qnn.backends import xnor_kernels
from qnn.packed.bits import PIXEL_BITS
from qnn.packed.bits import WORD_BITS
from qnn.packed.bits import n_words
from qnn.packed.bits import numba_plane_packer
from qnn.packed.bits import pixel_planes

# images per step of the reference: bounds its (chunk, units, words)
# temporaries to a few MB
_CHUNK = 64


def reference_planes(pixels, W, n_in):
    """Sums ``int64`` ``(B, units)`` of a ``'planes'`` layer of packed
    weights ``W`` ``(units, words)`` on ``uint8`` ``pixels`` ``(B, n_in)``
    (the NumPy reference)."""
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


def reference_xnor(X, W, n_in):
    """Sums ``int64`` ``(B, units)`` of an ``'xnor'`` layer: packed
    inputs ``X`` ``(B, words)`` of ``n_in`` values, weights ``W``
    ``(units, words)`` (the NumPy reference)."""
    out = numpy.empty((len(X), W.shape[0]), numpy.int64)
    for lo in range(0, len(X), _CHUNK):
        d = numpy.bitwise_count(X[lo:lo + _CHUNK, None, :] ^ W[None]).sum(
            axis=-1, dtype=numpy.int64)
        out[lo:lo + _CHUNK] = n_in - 2 * d
    return out


REFERENCE_SUMS = {'planes': reference_planes, 'xnor': reference_xnor}


def word_thresholds(layer):
    """The layer's thresholds as ``int64``, padded to whole words with a
    value no sum reaches (made once)."""
    def make():
        T = numpy.full(n_words(layer.n_out) * WORD_BITS,
                       numpy.iinfo(numpy.int64).max, numpy.int64)
        T[:layer.n_out] = layer.thresholds
        return T
    return layer.cached('word_thresholds', make)


# --- numba ------------------------------------------------------------------

_numba = None


def numba_kernels():
    """The numba kernels by name (built once, on first use: numba is
    imported only by a user of this path): ``'planes'``, ``'xnor'``,
    ``'threshold_pack'``, ``'tail'``, and the one-image step
    ``'xnor_layers'`` for other numba code (:func:`_image_steps`);
    ``'network'`` is a
    function of the number of words of the first layer's input that
    return the kernel compiled for it (``'planes'`` picks its own: see
    :func:`_planes_accumulator`). ``'network'`` and ``'tail'`` run a batch
    of fewer images than numba's threads on the calling thread
    (:func:`qnn.backends.cpu_kernels.by_batch`)."""
    global _numba
    if _numba is None:
        _numba = _build_numba()
    return _numba


def _build_numba():
    numba = cpu_kernels.import_numba()
    popcount = xnor_kernels.popcount_intrinsic()
    by_words = {}

    steps = _image_steps(numba, popcount)

    def for_words(words):
        if words not in by_words:
            first = (numba_plane_packer(numba, words),) + \
                _planes_accumulator(numba, popcount, words)
            by_words[words] = {
                'planes': _planes_kernel(numba, *first),
                'network': cpu_kernels.by_batch(
                    numba, _network_kernel(numba, steps, *first))}
        return by_words[words]

    def planes(pixels, WT, sums):
        for_words(WT.shape[0])['planes'](pixels, WT, sums)

    return {'xnor': xnor_kernels.get()['xnor'],
            'threshold_pack': _threshold_pack_kernel(numba),
            'tail': cpu_kernels.by_batch(numba, _tail_kernel(numba, steps)),
            'planes': planes,
            'network': lambda words: for_words(words)['network'],
            'xnor_layers': steps[3]}


def _planes_accumulator(numba, popcount, words):
    """``planes_acc(P, WT, acc, lo, hi)``, inlined in the kernels: adds
    :math:`\\sum_b 2^b \\mathrm{popcount}(P_b \\wedge W_j)` to
    ``acc[j - lo]`` for the units ``lo <= j < hi``; ``plane_ones(P)`` is
    :math:`\\sum_b 2^b \\mathrm{popcount}(P_b)`.

    ``words`` is a constant of the compiled code: the loop over a unit's
    words unrolls inside a loop over the units, which vectorizes (one
    VPOPCNTQ for 8 units on AVX-512) with the sums in registers. Two
    planes a pass: each weight word is read 4 times per image instead of
    8 (the weights, 104 KB for 1000 units on 784 pixels, are beyond L1),
    with 26 popcounts unrolled; the first layer of the MLP took 5.5 us an
    image on one core against 7.8 us one plane a pass, four planes a
    pass no faster and eight not vectorized by LLVM (2-core AMD EPYC,
    2026-12-07)."""
    @numba.njit(inline='always')
    def plane_ones(P):
        ones = 0
        for b in range(PIXEL_BITS):
            for k in range(words):
                ones += popcount(P[b, k]) << b
        return ones

    @numba.njit(inline='always')
    def planes_acc(P, WT, acc, lo, hi):
        # the unit's index unsigned: with a signed one (j - lo) numba's
        # test for a negative index kept the loop scalar, 4x slower
        for b in range(0, PIXEL_BITS, 2):
            for t in range(hi - lo):
                j = numpy.uint64(lo) + numpy.uint64(t)
                d0 = 0
                d1 = 0
                for k in range(words):
                    w = WT[k, j]
                    d0 += popcount(P[b, k] & w)
                    d1 += popcount(P[b + 1, k] & w)
                acc[t] += (d0 << b) + (d1 << (b + 1))

    return plane_ones, planes_acc


def _planes_kernel(numba, pack_planes, plane_ones, planes_acc):
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
            planes_acc(P, WT, acc, 0, M)
            ones = plane_ones(P)
            for j in range(M):
                sums[i, j] = 2 * acc[j] - ones

    return planes_sums


def _threshold_pack_kernel(numba):
    """``'threshold_pack'``: a layer's output bits
    :math:`[a_j \\ge T_j]` from its sums, packed, over the images on all
    cores. ``T`` is padded to whole words with a value no sum reaches
    (:func:`word_thresholds`): a word's 64 bits come from one fixed loop,
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


def _image_steps(numba, popcount):
    """The steps of one image through a network, inlined in the network
    kernels:

    * ``pack_word(values, T, q, lo)``: word ``q`` of a layer's output, bit
      ``j - 64 q`` set where ``values[j - lo] >= T[j]``; ``T`` is padded to
      whole words with a value no sum reaches, so that the bits come from
      a fixed loop of 64 (vectorized; its index unsigned, with no test for
      a negative one);
    * ``xnor_acc(h, WT, acc, lo, hi)``: ``acc[j - lo]`` set to
      :math:`\\mathrm{popcount}(H \\oplus W_j)` for ``lo <= j < hi``;
    * ``affine(sums, A, i, logits)``: row ``i`` of the logits from the
      output layer's sums, in the float32 order of :func:`qnn.packed.
      forward.affine_logits`, ``A`` its mean, inv_std, gamma and beta
      ``(4, classes)``;
    * ``xnor_layers(h, acc, hidden_WT, hidden_T, last_WT, n_ins, A, i,
      sums, logits)``: the ``'xnor'`` layers with a sign on packed ``h``,
      then the output layer's sums and row ``i`` of the logits; ``n_ins``
      the layers' inputs from the first of them.
    """
    lane = numpy.uint64

    @numba.njit(inline='always')
    def pack_word(values, T, q, lo):
        word = lane(0)
        for bit in range(WORD_BITS):
            j = lane(q << 6) + lane(bit)
            word |= lane(values[j - lane(lo)] >= T[j]) << lane(bit)
        return word

    @numba.njit(inline='always')
    def xnor_acc(h, WT, acc, lo, hi):
        n = hi - lo
        for t in range(n):
            acc[t] = 0
        for k in range(WT.shape[0]):
            x = h[k]
            for t in range(n):
                acc[t] += popcount(x ^ WT[k, lane(lo) + lane(t)])

    @numba.njit(inline='always')
    def affine(sums, A, i, logits):
        for j in range(logits.shape[1]):
            v = numpy.float32(sums[i, j])
            logits[i, j] = ((v - A[0, j]) * A[1, j]) * A[2, j] + A[3, j]

    return pack_word, xnor_acc, affine, _xnor_layers_step(
        numba, pack_word, xnor_acc, affine)


def _xnor_layers_step(numba, pack_word, xnor_acc, affine):
    """:func:`_image_steps`' ``xnor_layers``, shared by the MLP's and the
    ConvNets' dense layers."""

    @numba.njit(inline='always')
    def xnor_layers(h, acc, hidden_WT, hidden_T, last_WT, n_ins, A, i, sums,
                    logits):
        for layer in range(len(hidden_WT)):
            WT = hidden_WT[layer]
            T = hidden_T[layer]
            xnor_acc(h, WT, acc, 0, WT.shape[1])
            n_in = n_ins[layer]
            for j in range(T.shape[0]):
                acc[j] = n_in - 2 * acc[j]
            for q in range(T.shape[0] >> 6):
                h[q] = pack_word(acc, T, q, 0)
        M = last_WT.shape[1]
        xnor_acc(h, last_WT, acc, 0, M)
        for j in range(M):
            sums[i, j] = n_ins[len(n_ins) - 1] - 2 * acc[j]
        affine(sums, A, i, logits)

    return xnor_layers


def _network_kernel(numba, steps, pack_planes, plane_ones, planes_acc):
    """``'network'``: the sums and logits of a network of a ``'planes'``
    layer, ``'xnor'`` ones and an output layer, over the images on all
    cores."""
    pack_word, xnor_acc, affine, xnor_layers = steps

    @numba.njit(parallel=True)
    def network_sums(pixels, W1T, T1, hidden_WT, hidden_T, last_WT, n_ins,
                     A, sums, logits):
        # the whole network in one parallel region, one image per
        # iteration: one fork and join per call instead of two per layer
        # (on a loaded machine each join waits for a descheduled thread),
        # and each image's activations stay in the core's cache
        B = pixels.shape[0]
        widest = T1.shape[0]
        for T in hidden_T:
            widest = max(widest, T.shape[0])
        for i in numba.prange(B):
            P = pack_planes(pixels, i)
            acc = numpy.zeros(widest, numpy.int64)
            planes_acc(P, W1T, acc, 0, W1T.shape[1])
            ones = plane_ones(P)
            for j in range(T1.shape[0]):
                acc[j] = 2 * acc[j] - ones
            h = numpy.zeros(widest >> 6, numpy.uint64)
            for q in range(T1.shape[0] >> 6):
                h[q] = pack_word(acc, T1, q, 0)
            xnor_layers(h, acc, hidden_WT, hidden_T, last_WT, n_ins[1:],
                        A, i, sums, logits)

    return network_sums


def _tail_kernel(numba, steps):
    """``'tail'``: the sums and logits of ``'xnor'`` layers, one or more
    with a sign and an output layer, on packed inputs ``X`` ``(B, words)``
    (a ConvNet's flattened maps), over the images on all cores: one call
    for the dense layers instead of two kernels and their arrays a
    layer."""
    xnor_layers = steps[3]

    @numba.njit(parallel=True)
    def tail_sums(X, hidden_WT, hidden_T, last_WT, n_ins, A, sums, logits):
        widest = X.shape[1] << 6
        for T in hidden_T:
            widest = max(widest, T.shape[0])
        for i in numba.prange(X.shape[0]):
            acc = numpy.zeros(widest, numpy.int64)
            h = numpy.zeros(widest >> 6, numpy.uint64)
            h[:X.shape[1]] = X[i]
            xnor_layers(h, acc, hidden_WT, hidden_T, last_WT, n_ins, A, i,
                        sums, logits)

    return tail_sums


# --- CUDA -------------------------------------------------------------------

CUDA_SOURCE = r'''
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


def cuda_grid(n, threads=256):
    """``(blocks, threads)`` of a launch of ``n`` threads, one per output
    value, as every packed CUDA kernel takes them."""
    return ((n + threads - 1) // threads,), (threads,)


def cupy_kernels(cupy):
    """The CUDA kernels of :data:`CUDA_SOURCE` by name (compiled once)."""
    global _cupy_kernels
    if _cupy_kernels is None:
        module = cupy.RawModule(code=CUDA_SOURCE)
        _cupy_kernels = {name: module.get_function(name) for name in (
            'planes_sums', 'xnor_sums', 'threshold_pack')}
    return _cupy_kernels

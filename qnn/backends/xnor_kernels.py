"""XNOR-popcount kernels (numba) shared by training and packed networks.

A vector of :math:`n` values :math:`\\pm 1` is :math:`\\lceil n/64 \\rceil`
unsigned 64-bit words, value :math:`i` at bit :math:`i \\bmod 64` of word
:math:`\\lfloor i/64 \\rfloor`, bit 1 for :math:`+1`, the padding bits 0
(the layout of :mod:`qnn.packed.format`). Then

.. math::

    h \\cdot w = n - 2 \\, \\mathrm{popcount}(H \\oplus W)

and, for inputs of :math:`-1, 0, +1` with :math:`Z` the bits of the
nonzero ones,

.. math::

    h \\cdot w = \\mathrm{popcount}(Z) - 2 \\,
        \\mathrm{popcount}((H \\oplus W) \\wedge Z).

Kernels (:func:`get`), all tested against NumPy references:

* ``'xnor'``: the sums ``(B, M)`` of packed inputs ``X`` ``(B, K)`` and
  weights ``WT`` ``(K, M)`` (words by units), over the rows on all cores
  (the packed networks); ``'xnor_one_core'``: the same on one core
  (training's batches);
* ``'xnor_masked'``: the sums of inputs with zeros, on one core;
* ``'pack_sign_rows'``: rows of :math:`-1, 0, +1` to sign and nonzero
  words, checking the values.

The sums array may be integer or float: every sum is an exact integer,
exactly representable in float32 below :math:`2^{24}`.
"""
import numpy

from qnn.backends import cpu_kernels

WORD_BITS = 64

_kernels = None
_popcount = None


def popcount_intrinsic():
    """``popcount(x)``: the set bits of a ``uint64``, as an ``int64``, for
    numba code (made once)."""
    global _popcount
    if _popcount is None:
        _popcount = _make_popcount(cpu_kernels.import_numba())
    return _popcount


def _make_popcount(numba):
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def popcount(typingctx, x):
        # LLVM's ctpop: one POPCNT (or a vector VPOPCNTQ where the loop
        # vectorizes). The result is int64: numba would turn a uint64 sum
        # mixed with signed ints into float64.
        if x != types.uint64:
            return None

        def codegen(context, builder, signature, args):
            return builder.ctpop(args[0])
        return types.int64(types.uint64), codegen

    return popcount


def get():
    """The kernels by name (built on first use)."""
    global _kernels
    if _kernels is None:
        numba = cpu_kernels.import_numba()
        popcount = popcount_intrinsic()
        _kernels = _xnor_kernels(numba, popcount)
        _kernels['xnor_masked'] = _masked_kernel(numba, popcount)
        _kernels['pack_sign_rows'] = _pack_kernel(numba)
    return _kernels


def n_words(n):
    """64-bit words holding ``n`` bits."""
    return (n + WORD_BITS - 1) // WORD_BITS


def _xnor_kernels(numba, popcount):
    """``'xnor'`` (all cores) and ``'xnor_one_core'``."""
    @numba.njit(parallel=True, cache=True)
    def xnor_sums(X, WT, n_in, sums):
        # sums may be integer or float (the training forward): n_in - 2 d
        # is an exact integer either way below 2^24 (float32)
        B, K = X.shape
        M = WT.shape[1]
        whole = K - K % 8
        for i in numba.prange(B):
            acc = numpy.zeros(M, numpy.int64)
            # eight words per pass over the units: the loop over the units
            # vectorizes with eight popcounts summed in registers, and acc
            # is read and written once per eight words (1.3-1.9x faster
            # than once per word on 100 x 1000 by 1000 x 1000 and 1000 x
            # 1000 by 1000 x 1000, 2-core AMD EPYC, 2026-12-06)
            for k in range(0, whole, 8):
                x0, x1, x2, x3 = X[i, k], X[i, k + 1], X[i, k + 2], X[i, k + 3]
                x4, x5, x6, x7 = (X[i, k + 4], X[i, k + 5], X[i, k + 6],
                                  X[i, k + 7])
                for j in range(M):
                    acc[j] += (
                        popcount(x0 ^ WT[k, j]) + popcount(x1 ^ WT[k + 1, j])
                        + popcount(x2 ^ WT[k + 2, j])
                        + popcount(x3 ^ WT[k + 3, j])
                        + popcount(x4 ^ WT[k + 4, j])
                        + popcount(x5 ^ WT[k + 5, j])
                        + popcount(x6 ^ WT[k + 6, j])
                        + popcount(x7 ^ WT[k + 7, j]))
            for k in range(whole, K):
                x = X[i, k]
                for j in range(M):
                    acc[j] += popcount(x ^ WT[k, j])
            for j in range(M):
                sums[i, j] = n_in - 2 * acc[j]

    # one core, for training's batches of 100: the loop over the images in
    # parallel was slower there (100 x 1000 by 1000 x 1000: 0.20-0.24 ms
    # against 0.16 ms; 100 x 576 by 576 x 512: 0.09 against 0.05), and
    # barely faster for 1000 images
    xnor_one_core = numba.njit(cache=True)(cpu_kernels.renamed(
        xnor_sums.py_func, 'xnor_sums_one_core'))
    return {'xnor': xnor_sums, 'xnor_one_core': xnor_one_core}


def _masked_kernel(numba, popcount):
    """``'xnor_masked'``."""
    @numba.njit(cache=True)
    def xnor_masked_sums(X, Z, WT, sums):
        # the sums of inputs -1, 0, +1 (signs X, nonzero bits Z) on one
        # core: sum_j = popcount(Z) - 2 popcount((X ^ W_j) & Z)
        B, K = X.shape
        M = WT.shape[1]
        whole = K - K % 4
        for i in range(B):
            n = 0
            for k in range(K):
                n += popcount(Z[i, k])
            acc = numpy.zeros(M, numpy.int64)
            for k in range(0, whole, 4):
                x0, x1, x2, x3 = X[i, k], X[i, k + 1], X[i, k + 2], X[i, k + 3]
                z0, z1, z2, z3 = Z[i, k], Z[i, k + 1], Z[i, k + 2], Z[i, k + 3]
                for j in range(M):
                    acc[j] += (popcount((x0 ^ WT[k, j]) & z0)
                               + popcount((x1 ^ WT[k + 1, j]) & z1)
                               + popcount((x2 ^ WT[k + 2, j]) & z2)
                               + popcount((x3 ^ WT[k + 3, j]) & z3))
            for k in range(whole, K):
                x = X[i, k]
                z = Z[i, k]
                for j in range(M):
                    acc[j] += popcount((x ^ WT[k, j]) & z)
            for j in range(M):
                sums[i, j] = n - 2 * acc[j]

    return xnor_masked_sums


def _pack_kernel(numba):
    """``'pack_sign_rows'``."""
    @numba.njit(cache=True)
    def pack_sign_rows(x, out, nonzero):
        # x (R, n) float with values -1, 0, +1; out (R, words): bit 1 for
        # +1, nonzero (R, words): bit 1 for +-1. 1: all +-1; 2: zeros
        # too; 0, at the first row with another value (NaN, 0.5) or no
        # +-1 (the words are then not those of x)
        lane = numpy.uint64
        R, n = x.shape
        whole = n >> 6
        zeros = 0
        for r in range(R):
            row = x[r]
            bad = 0
            ones = lane(0)
            for q in range(whole):
                word = lane(0)
                nz = lane(0)
                base = lane(q << 6)
                # fixed 64 iterations, unsigned index: vectorized
                for bit in range(WORD_BITS):
                    v = row[base + lane(bit)]
                    bad |= (abs(v) != 1) & (v != 0)
                    word |= lane(v > 0) << lane(bit)
                    nz |= lane(v != 0) << lane(bit)
                out[r, q] = word
                nonzero[r, q] = nz
                ones |= nz
                zeros |= nz != ~lane(0)
            if n & 63:
                word = lane(0)
                nz = lane(0)
                for k in range(whole << 6, n):
                    v = row[k]
                    bad |= (abs(v) != 1) & (v != 0)
                    word |= lane(v > 0) << lane(k & 63)
                    nz |= lane(v != 0) << lane(k & 63)
                out[r, whole] = word
                nonzero[r, whole] = nz
                ones |= nz
                zeros |= nz != (lane(1) << lane(n & 63)) - lane(1)
            if bad or ones == 0:
                return 0
        return 2 if zeros else 1

    return pack_sign_rows

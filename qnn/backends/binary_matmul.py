"""Products of :math:`\\pm 1` matrices by XNOR and popcount, for training.

In a binarized layer both factors of :math:`h \\, q(W)^\\top` are
:math:`\\pm 1` (and the patches of a convolution, :math:`\\pm 1` with
zeros for the padding): every sum is an integer of magnitude at most
:math:`n` (the inner dimension), exact in floating point while :math:`n
\\le 2^{24}` (float32), so BLAS's float product is that integer whatever
order it sums in. Packed to words (:mod:`qnn.backends.xnor_kernels`), with
:math:`Z` the bits of the nonzero inputs,

.. math::

    h \\cdot w = n - 2 \\, \\mathrm{popcount}(H \\oplus W), \\qquad
    h \\cdot w = \\mathrm{popcount}(Z) - 2 \\,
        \\mathrm{popcount}((H \\oplus W) \\wedge Z)

give the same integers, bit for bit, for a fraction of the work: one
``VPOPCNTQ`` for 512 products. A zero sum is :math:`+0` in both: with at
least one nonzero term, float addition in round-to-nearest never makes
:math:`-0` of it (a row of zeros only takes BLAS's path). The values are
checked while they are packed, so a factor that is not all :math:`-1, 0,
+1` (pixels, dropout's scaled units, NaN) takes BLAS's path as before.
"""
import numpy

from qnn.backends import cpu_kernels
from qnn.backends import xnor_kernels

# Below this many output units BLAS is faster: packing the input costs
# more than the product saves (100 x 1000 by 1000 x 10: 0.028 ms against
# 0.020 ms; by 1000 x 16: 0.029 against 0.035; by 1000 x 512: 0.21
# against 0.71; 2-core AMD EPYC, 2026-12-06).
MIN_UNITS = 16


def xnor_matmul(x, w):
    """:math:`x w^\\top` for NumPy matrices ``x`` ``(B, n)`` of values
    :math:`-1, 0, +1` (each row with a nonzero) and ``w`` ``(M, n)`` of
    values :math:`\\pm 1`, of one float dtype, computed by XNOR and
    popcount on one core (equal to ``x.dot(w.T)``); ``None`` where that
    does not apply: not NumPy, numba off
    (:func:`qnn.backends.cpu_kernels.available`), fewer than
    :data:`MIN_UNITS` rows of ``w``, an ``n`` whose sums the dtype does not
    hold exactly, or other values. ``x`` is checked first, and the first
    row that fails stops the check.
    """
    if not (type(x) is numpy.ndarray and type(w) is numpy.ndarray
            and x.ndim == 2 and w.ndim == 2 and x.dtype == w.dtype
            and x.dtype in cpu_kernels.KERNEL_DTYPES
            and x.shape[1] == w.shape[1] and w.shape[0] >= MIN_UNITS
            and x.shape[1] <= 2 ** (numpy.finfo(x.dtype).nmant + 1)
            and cpu_kernels.available()):
        return None
    k = xnor_kernels.get()
    n = x.shape[1]
    X, Z = _words(x), _words(x)
    zeros = k['pack_sign_rows'](x, X, Z)
    if not zeros:
        return None
    W = _words(w)
    if k['pack_sign_rows'](w, W, _words(w)) != 1:
        return None
    WT = numpy.ascontiguousarray(W.T)
    y = numpy.empty((len(x), len(w)), x.dtype)
    if zeros == 1:
        k['xnor_one_core'](X, WT, n, y)
    else:
        k['xnor_masked'](X, Z, WT, y)
    return y


def dot(x, w, binary):
    """:math:`x w^\\top`: by :func:`xnor_matmul` where ``binary`` (``w``
    holds 1-bit weights) and it applies, else ``x.dot(w.T)``."""
    y = xnor_matmul(x, w) if binary else None
    return x.dot(w.T) if y is None else y


def _words(a):
    return numpy.empty((len(a), xnor_kernels.n_words(a.shape[1])),
                       numpy.uint64)

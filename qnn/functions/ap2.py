"""AP2: rounding to the nearest power of two (Hubara et al. 2016).

.. math::

    \\mathrm{AP2}(x) = \\mathrm{sign}(x) \\, 2^{\\mathrm{round}(\\log_2 |x|)}

with :math:`\\mathrm{AP2}(0) = 0`. A product with :math:`\\mathrm{AP2}(x)` is
a bit shift (and a sign flip), which is what the shift-based batch
normalization (:mod:`qnn.functions.shift_batch_normalization`) and the
shift-based AdaMax (:mod:`qnn.optimizers.shift_adamax`) replace multiplications
with.

The rounding is in the log domain: :math:`|x|` goes up to :math:`2^{e}` from
:math:`\\sqrt{2} \\cdot 2^{e-1}` on, not from :math:`1.5 \\cdot 2^{e-1}`.
Unlike :func:`qst.quantize` with ``quantizer='log'`` there is no clipping of
the exponent: AP2 keeps any magnitude the dtype can hold.
"""
import math

import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
from chainer import backend
from chainer import utils


def sqrt_half(dtype):
    """The least value of ``dtype`` at or above sqrt(1/2): AP2 rounds a
    mantissa below it down (shared with
    :func:`qnn.backends.cpu_kernels.shift_adamax`)."""
    # log2(m) >= 1/2 for a mantissa m in [1/2, 1) iff m >= sqrt(1/2); no
    # float is sqrt(1/2), so m < sqrt(1/2) iff m < the least float of the
    # dtype above it (sqrt(1/2) rounded to nearest may be below it: float16)
    t = numpy.asarray(math.sqrt(0.5)).astype(dtype)
    if float(t) < math.sqrt(0.5):
        t = numpy.nextafter(t, dtype.type(1))
    return t


def ap2(x):
    """Rounds each element of ``x`` to a signed power of two (AP2).

    Computed with ``frexp``/``ldexp``, so that every result is exactly
    :math:`\\pm 2^k` (or 0) and no ``log2`` of zero is ever taken.

    Args:
        x (numpy.ndarray or cupy.ndarray): A floating-point array.

    Returns:
        An array of the dtype and shape of ``x``.
    """
    xp = backend.get_array_module(x)
    mantissa, exponent = xp.frexp(x)
    # x = mantissa * 2^exponent with 1/2 <= |mantissa| < 1: round(log2|x|)
    # is exponent if |mantissa| >= sqrt(1/2), else exponent - 1
    exponent -= xp.abs(mantissa) < sqrt_half(x.dtype)
    one = xp.ones_like(x)
    y = xp.ldexp(xp.copysign(one, x), exponent)
    y = xp.where(x == 0, xp.zeros_like(x), y)
    return utils.force_array(y, x.dtype)

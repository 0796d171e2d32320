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
    :func:`qnn.optimizers.shift_adamax.numba_shift_adamax`)."""
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


# --- numba ------------------------------------------------------------------

def numba_ap2(numba):
    """``ap2_of(x, like, ...)``: AP2 of a float in the loops, inlined."""
    to_bits, from_bits = _bit_casts(numba)

    @numba.njit(inline='always')
    def ap2_of(x, like, sqrt_half, exponent_mask, fraction_mask,
               exponent_one, sqrt_half_fraction):
        # AP2(x) as ap2.ap2 computes it. For a normal float (1 + f) 2^e it
        # is 2^e, or 2^(e+1) when 1 + f >= 2 sqrt(1/2): the exponent bits,
        # plus one when the fraction bits reach those of sqrt(1/2) (integer
        # operations, vectorized; frexp and ldexp are calls into libm, 4x
        # slower). Zero, subnormals, inf and NaN take frexp's way.
        b = to_bits(x)
        exponent = b & exponent_mask
        if exponent != 0 and exponent != exponent_mask:
            r = (b & ~(exponent_mask | fraction_mask)) | exponent
            if b & fraction_mask >= sqrt_half_fraction:
                r += exponent_one
            return from_bits(r, x)
        mantissa, e = math.frexp(x)
        if abs(mantissa) < sqrt_half:
            e -= 1
        if x == 0:
            return like.dtype.type(0.0)
        return like.dtype.type(math.ldexp(math.copysign(1.0, x), e))

    return ap2_of


def _bit_casts(numba):
    """The intrinsics ``to_bits(x)`` and ``from_bits(b, like)``: a float's
    bits as an unsigned integer, and back."""
    from numba.extending import intrinsic

    @intrinsic
    def to_bits(typingctx, x):
        # the bits of a float as the unsigned integer of its width
        uint = numba.types.uint32 if x.bitwidth == 32 else numba.types.uint64

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(uint))
        return uint(x), codegen

    @intrinsic
    def from_bits(typingctx, b, like):
        # the float of like's type with the low bits of the integer b
        # (numba widens integer arithmetic to 64 bits)
        def codegen(context, builder, signature, args):
            low = builder.trunc(args[0], context.get_value_type(
                numba.types.Integer.from_bitwidth(like.bitwidth, False))) \
                if b.bitwidth > like.bitwidth else args[0]
            return builder.bitcast(low, context.get_value_type(like))
        return like(b, like), codegen

    return to_bits, from_bits

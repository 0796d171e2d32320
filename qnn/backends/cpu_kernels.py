"""Fused loops of the training step on the CPU (numba), with their NumPy
references.

NumPy runs one elementwise operation per pass over memory: Adam's update
of the 1.8 M weights of the MNIST MLP is a dozen passes, the clip to
[-1, 1] one more, the sign of a weight matrix three. Here each is one
pass (Adam's on all cores, ``numba.prange``, for large arrays), doing for
every element the same float operations in the same order as the NumPy
reference, so results are bit for bit the reference's (``fastmath`` off:
no reassociation, no fused multiply-add):

* :func:`adam`: Chainer's Adam step (as :mod:`qnn.optimizers.inplace_adam`
  writes it), then, optionally, the clip to ``[lower, upper]``;
* :func:`shift_adamax`: the shift-based AdaMax step of
  :mod:`qnn.optimizers.shift_adamax`, with the AP2 rounding of
  :mod:`qnn.functions.ap2` inside;
* :func:`sign`: :math:`\\mathrm{sign}(x)` with :math:`\\mathrm{sign}(0) =
  +1`, NaN kept (the deterministic binarization of :mod:`qst`);
* :func:`ste`: the straight-through gradient of :mod:`qst`;
* :func:`im2col` and :func:`col2im`: the patches of a convolution as one
  matrix (channels last) and its adjoint, for
  :mod:`qnn.functions.quantized_convolution_2d` (copies, and sums in
  the order of its NumPy reference);
* :func:`max_pool_2x2` and :func:`max_pool_2x2_grad`: 2x2 max pooling
  with stride 2 and its gradient, for :mod:`qnn.functions.max_pooling_2x2`.

:func:`available` says whether numba is there; without it (or with
``QNN_CPU_KERNELS=numpy`` in the environment) the callers use their NumPy
code, which is also what the tests compare these kernels with. The
kernels compile on first use (about a second each; numba's cache keeps
them between runs).
"""
import math
import os

import numpy

# Adam's loop runs on all cores from this many elements on (see
# _adam_kernels).
PARALLEL_MIN = 1 << 15

_kernels = None


def available():
    """Whether the numba kernels can be used (numba importable and not
    turned off with ``QNN_CPU_KERNELS=numpy``)."""
    if os.environ.get('QNN_CPU_KERNELS', 'numba') == 'numpy':
        return False
    try:
        _get_kernels()
    except ImportError:
        return False
    return True


def import_numba():
    """numba, with its parallel loops on its own thread pool ('workqueue')
    unless ``NUMBA_THREADING_LAYER`` says otherwise: the default OpenMP
    pool spins after each loop, and on a 2-core machine with anything else
    running (OpenBLAS's threads, another process) a step took twice as
    long."""
    import numba
    if 'NUMBA_THREADING_LAYER' not in os.environ:
        numba.config.THREADING_LAYER = 'workqueue'
    return numba


def _build():
    """The kernels by name; those of the optimizers in two versions, on
    all cores and (``_small``) on one."""
    numba = import_numba()
    kernels = _adam_kernels(numba)
    kernels.update(_shift_adamax_kernels(numba))
    kernels.update(_qst_kernels(numba))
    kernels.update(_convolution_kernels(numba))
    kernels.update(_pooling_kernels(numba))
    kernels.update(_batch_normalization_kernels(numba))
    kernels.update(_bn_statistics_kernel(numba))
    return kernels


def _adam_kernels(numba):
    """``'adam'`` (parallel) and ``'adam_small'``: the loop of
    :func:`adam`."""
    def adam_loop(param, grad, m, v, c1, c2, alpha_t, eps, decay, neg_eta,
                  lower, upper, clip, n):
        for i in numba.prange(n):
            g = grad[i]
            mi = m[i] + (g - m[i]) * c1
            m[i] = mi
            vi = v[i] + (g * g - v[i]) * c2
            v[i] = vi
            t = alpha_t / (numpy.sqrt(vi) + eps) * mi
            p = param[i]
            if decay != 1:
                p = p * decay
            p = p + t * neg_eta
            # NaN fails both tests and stays NaN, as in numpy.clip
            if clip:
                if p < lower:
                    p = lower
                elif p > upper:
                    p = upper
            param[i] = p

    # Measured here (2 cores): starting a parallel loop costs about 0.1 ms;
    # Adam's loop in parallel is vectorized and runs 0.5 ms per million
    # elements against 4 ms on one core, so it pays from about 30,000
    # elements (PARALLEL_MIN). numba's cache tells functions apart by name
    # and types, not by the parallel flag, hence the one-core copy under
    # another name.
    adam_small = renamed(adam_loop, 'adam_small')
    return {
        'adam': numba.njit(parallel=True, cache=True)(adam_loop),
        'adam_small': numba.njit(cache=True)(adam_small),
    }


def _shift_adamax_kernels(numba):
    """``'shift_adamax'`` (parallel) and ``'shift_adamax_small'``: the loop
    of :func:`shift_adamax`."""
    ap2_of = _ap2_kernel(numba)

    def shift_adamax_loop(param, grad, m, u, c1, beta2, eps, step,
                          round_norm, sqrt_half, exponent_mask,
                          fraction_mask, exponent_one, sqrt_half_fraction,
                          n):
        for i in numba.prange(n):
            g = grad[i]
            mi = m[i] + c1 * (g - m[i])
            m[i] = mi
            # numpy.maximum: NaN from either side wins
            bu = beta2 * u[i]
            ag = abs(g)
            if bu != bu or ag <= bu:
                ui = bu
            else:
                ui = ag  # larger, or NaN
            if round_norm:
                ui = ap2_of(ui, param, sqrt_half, exponent_mask,
                            fraction_mask, exponent_one, sqrt_half_fraction)
            u[i] = ui
            divisor = ap2_of(ui + eps, param, sqrt_half, exponent_mask,
                             fraction_mask, exponent_one, sqrt_half_fraction)
            param[i] -= step * mi / divisor

    # the two versions as Adam's (see _adam_kernels)
    shift_adamax_small = renamed(shift_adamax_loop, 'shift_adamax_small')
    # error_model='numpy': m / 0 (eps = 0) gives inf or NaN, as in NumPy,
    # instead of raising ZeroDivisionError
    return {
        'shift_adamax': numba.njit(parallel=True, cache=True,
                                   error_model='numpy')(shift_adamax_loop),
        'shift_adamax_small': numba.njit(cache=True, error_model='numpy')(
            shift_adamax_small),
    }


def _ap2_kernel(numba):
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


def _qst_kernels(numba):
    """``'sign'`` and ``'ste'``, the loops of :func:`sign` and
    :func:`ste`."""
    # one core: sign, vectorized there too, is memory-bound and did no
    # better on two
    def sign_loop(x, y, n):
        for i in range(n):
            xi = x[i]
            if xi >= 0:
                y[i] = 1.0
            elif xi < 0:
                y[i] = -1.0
            else:
                y[i] = xi  # NaN

    def ste_loop(x, gy, gx, n):
        for i in range(n):
            gx[i] = gy[i] if abs(x[i]) <= 1 else gy[i] * 0

    return {
        'sign': numba.njit(cache=True)(sign_loop),
        'ste': numba.njit(cache=True)(ste_loop),
    }


def _convolution_kernels(numba):
    """``'im2col'`` and ``'col2im'``, the loops of :func:`im2col` and
    :func:`col2im`."""
    # Both work on one image at a time through a zero-padded copy of it
    # with the channels last, where every (ky, kx) of a patch is a run of
    # c values (kw * c when dx = 1). Flat arrays with unsigned indices:
    # numba then drops its check for negative indices and vectorizes the
    # runs (ten times faster than indexing the 4-D arrays).
    index = numba.uint64

    def im2col_loop(x, col, kh, kw, sy, sx, ph, pw, dy, dx, hp, wp):
        n, c, h, w = x.shape
        _, oh, ow, k = col.shape
        out = col.reshape(-1)
        padded = numpy.zeros(hp * wp * c, x.dtype)
        runs, run = (1, kw * c) if dx == 1 else (kw, c)
        for i in range(n):
            for ci in range(c):
                for y in range(h):
                    for xx in range(w):
                        padded[index(((y + ph) * wp + xx + pw) * c + ci)] = \
                            x[i, ci, y, xx]
            for oy in range(oh):
                for ox in range(ow):
                    target = index(((i * oh + oy) * ow + ox) * k)
                    for ky in range(kh):
                        for r in range(runs):
                            source = index(((oy * sy + ky * dy) * wp +
                                            ox * sx + r * dx) * c)
                            for j in range(index(run)):
                                out[target + j] = padded[source + j]
                            target += index(run)

    def col2im_loop(col, gx, kh, kw, sy, sx, ph, pw, dy, dx, hp, wp):
        # each element of gx sums its terms from 0 in the order (ky, kx),
        # that of Chainer's col2im_cpu (one slice add per (ky, kx))
        n, c, h, w = gx.shape
        _, oh, ow, k = col.shape
        flat = col.reshape(-1)
        padded = numpy.empty(hp * wp * c, col.dtype)
        for i in range(n):
            padded[:] = 0
            for ky in range(kh):
                for kx in range(kw):
                    for oy in range(oh):
                        for ox in range(ow):
                            source = index(((i * oh + oy) * ow + ox) * k +
                                           (ky * kw + kx) * c)
                            target = index(((oy * sy + ky * dy) * wp +
                                            ox * sx + kx * dx) * c)
                            for j in range(index(c)):
                                padded[target + j] += flat[source + j]
            for ci in range(c):
                for y in range(h):
                    for xx in range(w):
                        gx[i, ci, y, xx] = padded[
                            index(((y + ph) * wp + xx + pw) * c + ci)]

    return {'im2col': numba.njit(cache=True)(im2col_loop),
            'col2im': numba.njit(cache=True)(col2im_loop)}


def _pooling_kernels(numba):
    """``'max_pool_2x2'`` and ``'max_pool_2x2_grad'``, the loops of
    :func:`max_pool_2x2` and :func:`max_pool_2x2_grad`, on arrays viewed
    channels last, ``(n, h, w, c)``: the inner loop runs over the channels
    of one window, contiguous in a convolution's output."""
    def corners(h, w, oy, ox):
        # the rows and columns of a window; at an odd edge the one there
        # is, twice: a repeated element changes neither the maximum nor
        # the first element equal to it
        y0, x0 = 2 * oy, 2 * ox
        return y0, min(y0 + 1, h - 1), x0, min(x0 + 1, w - 1)

    corners = numba.njit(inline='always')(corners)

    def pool_loop(x, y, index):
        n, h, w, c = x.shape
        _, oh, ow, _ = y.shape
        for i in range(n):
            for oy in range(oh):
                for ox in range(ow):
                    y0, y1, x0, x1 = corners(h, w, oy, ox)
                    a, b = x[i, y0, x0], x[i, y0, x1]
                    d, e = x[i, y1, x0], x[i, y1, x1]
                    out, at = y[i, oy, ox], index[i, oy, ox]
                    for j in range(c):
                        # numpy.maximum of the four (NaN wins), then the
                        # first element equal to it (none: the last)
                        m = a[j]
                        for v in (b[j], d[j], e[j]):
                            if not m >= v and m == m:
                                m = v
                        k = 3
                        if d[j] == m:
                            k = 2
                        if b[j] == m:
                            k = 1
                        if a[j] == m:
                            k = 0
                        out[j] = m
                        at[j] = k

    def pool_grad_loop(gy, index, gx):
        # each element of gx once: its window's gradient where the window
        # chose it, else 0
        n, h, w, c = gx.shape
        for i in range(n):
            for yy in range(h):
                for xx in range(w):
                    k = (yy % 2) * 2 + xx % 2
                    g = gy[i, yy // 2, xx // 2]
                    at = index[i, yy // 2, xx // 2]
                    out = gx[i, yy, xx]
                    for j in range(c):
                        out[j] = g[j] if at[j] == k else 0

    return {'max_pool_2x2': numba.njit(cache=True)(pool_loop),
            'max_pool_2x2_grad': numba.njit(cache=True)(pool_grad_loop)}


def _bn_statistics_kernel(numba):
    """``'bn_statistics'``: the loop of :func:`bn_statistics`."""
    # NumPy's x.mean(axis=0) and x.var(axis=0) of a C-contiguous (n, c):
    # each channel summed from 0 in row order, divided by n (in float64,
    # rounded to the dtype: the correctly rounded quotient either way),
    # then the sum of the squares of x - mean, divided by n
    def bn_statistics_loop(x, mean, var):
        n, c = x.shape
        mean[:] = 0
        for i in range(n):
            for j in range(c):
                mean[j] += x[i, j]
        for j in range(c):
            mean[j] = mean[j] / n
        var[:] = 0
        for i in range(n):
            for j in range(c):
                d = x[i, j] - mean[j]
                var[j] += d * d
        for j in range(c):
            var[j] = var[j] / n

    return {'bn_statistics': numba.njit(cache=True)(bn_statistics_loop)}


def _batch_normalization_kernels(numba):
    """``'bn_sign'``, ``'bn_sign_masked'``, ``'bn_sign_masked_sums'`` and
    ``'bn_sign_grad'``: the loops of :func:`bn_sign`, :func:`bn_sign_masked`,
    :func:`bn_sign_masked_sums` and :func:`bn_sign_grad`. Every operation is Chainer's (its ``_x_hat``,
    ``_apply_bn_fwd`` and backward), then qst's sign or straight-through
    mask, in the arrays' dtype and order."""
    inline = numba.njit(inline='always')

    @inline
    def normalized(v, mu, r, g, b):
        t = (v - mu) * r
        return t, t * g + b

    # the straight-through gradient of the sign of y = BN(v), gy times 0
    # outside |y| <= 1, and x_hat
    @inline
    def masked(v, g, mu, r, gm, b, zero):
        t, y = normalized(v, mu, r, gm, b)
        return (g if abs(y) <= 1 else g * zero), t

    # x is (n, c, s), or, for a dense layer, (n, 1, c) with last = True:
    # the channel of x[i, a, b] is b then, a otherwise, and the inner loop
    # runs along memory either way (a loop of one element per channel ran
    # ten times slower)
    def bn_sign_loop(x, last, mean, inv_std, gamma, beta, one, q):
        n, p, s = x.shape
        for i in range(n):
            for a in range(p):
                for b in range(s):
                    ch = b if last else a
                    _, y = normalized(x[i, a, b], mean[ch], inv_std[ch],
                                      gamma[ch], beta[ch])
                    q[i, a, b] = one if y >= 0 else (-one if y < 0 else y)

    # zero: 0 of the dtype (a Python 0 would make the product float64)
    def bn_masked_loop(x, gy, last, mean, inv_std, gamma, beta, zero, gm,
                    gm_x_hat):
        n, p, s = x.shape
        for i in range(n):
            for a in range(p):
                for b in range(s):
                    ch = b if last else a
                    g, t = masked(x[i, a, b], gy[i, a, b], mean[ch],
                                  inv_std[ch], gamma[ch], beta[ch], zero)
                    gm[i, a, b] = g
                    gm_x_hat[i, a, b] = g * t

    # the same for a dense (n, c), with NumPy's gm.sum(axis=0) and
    # (gm * x_hat).sum(axis=0) in the same pass: each channel summed from
    # 0 in row order, as NumPy does
    def bn_masked_sums_loop(x, gy, mean, inv_std, gamma, beta, zero, gm,
                            ggamma, gbeta):
        n, c = x.shape
        ggamma[:] = 0
        gbeta[:] = 0
        for i in range(n):
            for j in range(c):
                g, t = masked(x[i, j], gy[i, j], mean[j], inv_std[j],
                              gamma[j], beta[j], zero)
                gm[i, j] = g
                gbeta[j] += g
                ggamma[j] += g * t

    def bn_grad_loop(x, gm, last, mean, inv_std, gamma, ggamma, gbeta, inv_m,
                  gx):
        n, p, s = x.shape
        for i in range(n):
            for a in range(p):
                for b in range(s):
                    ch = b if last else a
                    t = (x[i, a, b] - mean[ch]) * inv_std[ch]
                    gx[i, a, b] = (gamma[ch] * inv_std[ch]) * (
                        gm[i, a, b] - (t * ggamma[ch] + gbeta[ch]) * inv_m)

    return {'bn_sign': numba.njit(cache=True)(bn_sign_loop),
            'bn_sign_masked': numba.njit(cache=True)(bn_masked_loop),
            'bn_sign_masked_sums': numba.njit(cache=True)(
                bn_masked_sums_loop),
            'bn_sign_grad': numba.njit(cache=True)(bn_grad_loop)}


def renamed(function, name):
    """A copy of a Python function under another name (and qualname)."""
    import types
    copy = types.FunctionType(function.__code__.replace(co_name=name,
                                                        co_qualname=name),
                              function.__globals__, name,
                              function.__defaults__, function.__closure__)
    copy.__qualname__ = name
    return copy


def _get_kernels():
    global _kernels
    if _kernels is None:
        _kernels = _build()
    return _kernels


def adam(param, grad, m, v, c1, c2, alpha_t, eps, eta, weight_decay_rate,
         clip=None):
    """One Adam step on flat C-contiguous arrays of one float dtype, in
    place, then the clip of ``param`` to ``clip = (lower, upper)``:

    .. math::

        m &\\mathrel{+}= c_1 (g - m), \\qquad
        v \\mathrel{+}= c_2 (g^2 - v), \\\\
        \\theta &\\leftarrow (1 - \\eta\\lambda)\\,\\theta
            + \\frac{\\alpha_t}{\\sqrt{v} + \\epsilon} \\, m \\, (-\\eta),
        \\qquad \\theta \\leftarrow \\min(\\max(\\theta, l), u)

    with :math:`c_1 = 1 - \\beta_1`, :math:`c_2 = 1 - \\beta_2` and every
    constant rounded to the arrays' dtype first, as NumPy does with a
    Python scalar.
    """
    dtype = param.dtype.type
    decay = 1.0 - eta * weight_decay_rate
    lower, upper = clip if clip is not None else (0.0, 0.0)
    n = param.size
    kernel = 'adam' if n >= PARALLEL_MIN else 'adam_small'
    _get_kernels()[kernel](
        param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
        dtype(c1), dtype(c2), dtype(alpha_t), dtype(eps), dtype(decay),
        dtype(-eta), dtype(lower), dtype(upper), clip is not None, n)


def shift_adamax(param, grad, m, u, beta1, beta2, eps, step, round_norm,
                 sqrt_half):
    """One shift-based AdaMax step
    (:class:`qnn.optimizers.shift_adamax.ShiftAdaMaxRule`) on C-contiguous
    arrays of one float dtype, in place:

    .. math::

        m \\mathrel{+}= (1 - \\beta_1)(g - m), \\qquad
        u \\leftarrow \\max(\\beta_2 u, |g|), \\qquad
        \\theta \\mathrel{-}= \\frac{s \\, m}{\\mathrm{AP2}(u + \\epsilon)}

    with ``step`` :math:`s` a power of two and every constant rounded to
    the arrays' dtype first, as NumPy does with a Python scalar. With
    ``round_norm`` :math:`u` is stored rounded,
    :math:`u \\leftarrow \\mathrm{AP2}(\\max(\\beta_2 u, |g|))`.
    ``sqrt_half`` is :func:`qnn.functions.ap2.sqrt_half` of the dtype, the
    mantissa below which AP2 rounds down.
    """
    dtype = param.dtype.type
    n = param.size
    # the IEEE 754 fields of the dtype, for AP2 on the bits
    uint = numpy.dtype('u{}'.format(param.itemsize)).type
    fraction_bits = numpy.finfo(param.dtype).nmant
    exponent_one = uint(1) << uint(fraction_bits)
    fraction_mask = exponent_one - uint(1)
    exponent_mask = ((uint(1) << uint(8 * param.itemsize - 1)) - uint(1)) \
        & ~fraction_mask
    threshold = numpy.asarray(sqrt_half, param.dtype)
    kernel = 'shift_adamax' if n >= PARALLEL_MIN else 'shift_adamax_small'
    _get_kernels()[kernel](
        param.reshape(-1), grad.reshape(-1), m.reshape(-1), u.reshape(-1),
        dtype(1.0 - beta1), dtype(beta2), dtype(eps), dtype(step),
        bool(round_norm), threshold[()], exponent_mask,
        fraction_mask, exponent_one,
        threshold.view(uint)[()] & fraction_mask, n)


KERNEL_DTYPES = (numpy.float32, numpy.float64)


def usable(*arrays, strided=False):
    """Whether the kernels take these arrays: NumPy, C-contiguous (any
    strides with ``strided``), all of one dtype, float32 or float64, and
    the kernels available."""
    dtype = arrays[0].dtype
    return all(isinstance(a, numpy.ndarray) and a.dtype == dtype and
               (strided or a.flags.c_contiguous) for a in arrays) and \
        dtype in KERNEL_DTYPES and available()


def sign(x, y):
    """``y[...] = sign(x)`` with sign(0) = +1 and NaN kept, for C-contiguous
    ``x`` and ``y`` of one float dtype."""
    n = x.size
    _get_kernels()['sign'](x.reshape(-1), y.reshape(-1), n)


def ste(x, gy):
    """The straight-through gradient :math:`g_y \\cdot 1_{|x| \\le 1}` (as
    :func:`qst.ste_mask` times ``gy``: 0 times ``gy`` outside, so NaN and
    the sign of zero are those of the product), for C-contiguous ``x`` and
    ``gy`` of one float dtype."""
    gx = numpy.empty_like(gy)
    _get_kernels()['ste'](x.reshape(-1), gy.reshape(-1), gx.reshape(-1),
                          x.size)
    return gx


def im2col(x, kh, kw, sy, sx, ph, pw, dy, dx, oh, ow):
    """The patches of a convolution as one matrix, in one pass: row
    ``(i, oy, ox)``, column ``(ky, kx, c)``, the element
    ``x[i, c, oy * sy + ky * dy - ph, ox * sx + kx * dx - pw]`` (0 outside
    ``x``). ``x`` is a 4-D float array of any strides; the result is
    ``(n * oh * ow, kh * kw * c)``, C-contiguous."""
    n, c = x.shape[:2]
    col = numpy.empty((n, oh, ow, kh * kw * c), dtype=x.dtype)
    _get_kernels()['im2col'](x, col, kh, kw, sy, sx, ph, pw, dy, dx,
                             *padded_size(x.shape, kh, kw, sy, sx, ph, pw,
                                           dy, dx, oh, ow))
    return col.reshape(n * oh * ow, -1)


def padded_size(shape, kh, kw, sy, sx, ph, pw, dy, dx, oh, ow):
    """The rows and columns of the zero-padded image that :func:`im2col`
    and :func:`col2im` work through: the image of ``shape`` after the
    padding, and all that the ``oh * ow`` patches reach."""
    h, w = shape[2:]
    return (max(h + ph, (oh - 1) * sy + (kh - 1) * dy + 1),
            max(w + pw, (ow - 1) * sx + (kw - 1) * dx + 1))


def col2im(col, shape, kh, kw, sy, sx, ph, pw, dy, dx, oh, ow):
    """The adjoint of :func:`im2col`: each element of an array of
    ``shape`` ``(n, c, h, w)`` summed from 0 over the entries of ``col``
    it was copied to, in the order (ky, kx) of Chainer's ``col2im_cpu``.
    ``col`` is C-contiguous; the result is C-contiguous."""
    gx = numpy.empty(shape, dtype=col.dtype)
    _get_kernels()['col2im'](
        col.reshape(shape[0], oh, ow, -1), gx, kh, kw, sy, sx, ph, pw, dy,
        dx, *padded_size(shape, kh, kw, sy, sx, ph, pw, dy, dx, oh, ow))
    return gx


def max_pool_2x2(x):
    """2x2 max pooling with stride 2 of the 4-D array ``x`` (any strides;
    fastest channels last, as a convolution's output is): returns the
    maximum of each window, NaN winning as in ``numpy.maximum``,
    C-contiguous ``(n, c, ceil(h / 2), ceil(w / 2))``, and the first window
    element (row-major) equal to it, 3 when none is (int8, of that shape,
    channels last)."""
    n, c, h, w = x.shape
    shape = (n, (h + 1) // 2, (w + 1) // 2, c)
    y = numpy.empty(shape, x.dtype)
    index = numpy.empty(shape, 'b')
    _get_kernels()['max_pool_2x2'](x.transpose(0, 2, 3, 1), y, index)
    # written channels last (contiguous runs), then made C-contiguous
    return (numpy.ascontiguousarray(y.transpose(0, 3, 1, 2)),
            index.transpose(0, 3, 1, 2))


def max_pool_2x2_grad(gy, index, shape):
    """The gradient of :func:`max_pool_2x2` for an input of ``shape``:
    each window's element ``index`` gets ``gy``, the window's other
    elements 0; returned channels last (a view ``(n, c, h, w)`` of
    ``(n, h, w, c)``)."""
    n, c, h, w = shape
    gx = numpy.empty((n, h, w, c), gy.dtype)
    _get_kernels()['max_pool_2x2_grad'](
        numpy.ascontiguousarray(gy.transpose(0, 2, 3, 1)),
        index.transpose(0, 2, 3, 1), gx)
    return gx.transpose(0, 3, 1, 2)




def _rows(x):
    # (n, c, ...) C-contiguous as the kernels take it: (n, c, s), or
    # (n, 1, c) and last = True when there is no axis after c
    n, c = x.shape[:2]
    return (x.reshape(n, 1, c), True) if x.ndim == 2 else (
        x.reshape(n, c, -1), False)


def bn_statistics(x):
    """``(x.mean(axis=0), x.var(axis=0))`` of a C-contiguous ``(n, c)``
    ``x``, in its dtype, bit for bit NumPy's; one pass each, without
    NumPy's temporaries."""
    mean = numpy.empty(x.shape[1], x.dtype)
    var = numpy.empty_like(mean)
    _get_kernels()['bn_statistics'](x, mean, var)
    return mean, var


def bn_sign(x, mean, inv_std, gamma, beta):
    """:math:`\\mathrm{sign}(\\gamma (x - \\mu) r + \\beta)`, channel by
    channel (axis 1) of the C-contiguous ``x`` (the per-channel arrays of
    its dtype), with sign(0) = +1 and NaN kept; one pass."""
    q = numpy.empty_like(x)
    _get_kernels()['bn_sign'](*_rows(x), mean, inv_std, gamma, beta,
                              x.dtype.type(1), _rows(q)[0])
    return q


def bn_sign_masked(x, gy, mean, inv_std, gamma, beta):
    """The straight-through gradient of the sign of
    :math:`y = \\gamma \\hat{x} + \\beta`, :math:`g_m = g_y 1_{|y| \\le 1}`
    (``gy`` times 0 outside), and :math:`g_m \\hat{x}`; one pass."""
    gm = numpy.empty_like(gy)
    gm_x_hat = numpy.empty_like(gy)
    rows, last = _rows(x)
    _get_kernels()['bn_sign_masked'](
        rows, _rows(gy)[0], last, mean, inv_std, gamma, beta,
        x.dtype.type(0), _rows(gm)[0], _rows(gm_x_hat)[0])
    return gm, gm_x_hat


def bn_sign_masked_sums(x, gy, mean, inv_std, gamma, beta):
    """For a C-contiguous dense ``(n, c)`` ``x``: :math:`g_m` of
    :func:`bn_sign_masked` and its sums over the batch,
    :math:`g_\\gamma = \\sum g_m \\hat{x}` and :math:`g_\\beta = \\sum g_m`,
    bit for bit NumPy's ``sum(axis=0)`` of them; one pass."""
    gm = numpy.empty_like(gy)
    ggamma = numpy.empty_like(mean)
    gbeta = numpy.empty_like(mean)
    _get_kernels()['bn_sign_masked_sums'](
        x, gy, mean, inv_std, gamma, beta, x.dtype.type(0), gm, ggamma,
        gbeta)
    return gm, ggamma, gbeta


def bn_sign_grad(x, gm, mean, inv_std, gamma, ggamma, gbeta, inv_m):
    """Chainer's :math:`g_x` of batch normalization with the batch's
    statistics, :math:`\\gamma r (g_m - (\\hat{x} g_\\gamma + g_\\beta)
    / m)`; one pass."""
    gx = numpy.empty_like(gm)
    rows, last = _rows(x)
    _get_kernels()['bn_sign_grad'](rows, _rows(gm)[0], last, mean, inv_std,
                                   gamma, ggamma, gbeta, inv_m,
                                   _rows(gx)[0])
    return gx

"""Quantization with a straight-through estimator (QST).

The forward pass replaces a real value by its quantized value; the backward
pass pretends the quantizer was the identity inside [-1, 1] and a constant
outside it (Hubara et al. 2016, "Quantized Neural Networks", eq. 4), for
every quantizer of this module:

.. math::

    y = q(x), \\qquad
    \\frac{\\partial L}{\\partial x} =
        \\frac{\\partial L}{\\partial y} \\, 1_{|x| \\le 1}

Quantizers (:func:`quantize`), for ``bits`` = :math:`k`:

* ``'linear'``: clip to [-1, 1], then round to the :math:`2^k` evenly
  spaced levels :math:`-1 + 2i / (2^k - 1)`, :math:`i = 0 \\dots 2^k - 1`.
  :math:`k = 1` is :math:`\\mathrm{sign}(x)` with
  :math:`\\mathrm{sign}(0) = +1`.
* ``'log'``: :math:`\\mathrm{sign}(x) \\cdot 2^{\\mathrm{round}(\\log_2|x|)}`
  (the paper's LogQuant) with the exponent clipped to the :math:`2^{k-1}`
  values :math:`-(2^{k-1} - 1) \\dots 0`: one sign bit and :math:`k - 1`
  exponent bits, :math:`2^k` levels, none of them zero (:math:`k = 1` is
  again the sign). Magnitudes below the smallest level, 0 included, go to
  the smallest level, with :math:`\\mathrm{sign}(0) = +1`.
* ``bits=32`` (or ``None``): no rounding, only the clip to [-1, 1] (the
  hard tanh, whose derivative the STE is), so a full-precision baseline
  runs through the same code. Without the clip, a network whose
  activations are "quantized" to 32 bits would be linear.

Stochastic quantization (the paper's stochastic binarization, eq. 2,
generalized to :math:`k` bits) rounds up with probability equal to the
distance from the level below, so that :math:`E[q(x)] = \\mathrm{clip}(x,
-1, 1)` for the linear quantizer; for :math:`k = 1` that is :math:`+1` with
probability :math:`\\sigma(x) = \\mathrm{clip}((x + 1)/2, 0, 1)`. It draws
from ``xp.random`` (seed NumPy's or CuPy's global generator), and
:func:`qst` and :func:`function_quantized_linear.quantized_linear` use it
only while ``chainer.config.train`` is ``True``.

:func:`quantize` is the one implementation of :math:`q`: activations
(:func:`qst`) and weights (:func:`function_quantized_linear.quantized_linear`)
both call it, and :func:`quantize_gradient` shares its rounding.
"""
import collections
import numbers

import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import backend
from chainer import function_node
from chainer import utils
from chainer.utils import type_check

from qnn.backends import cpu_kernels
from qnn.backends import cpu_threads


FULL_PRECISION = 32
QUANTIZERS = ('linear', 'log')


def check_bits(bits):
    """Returns ``bits`` as an int in 1..32; ``None`` means 32 (no rounding).

    Raises:
        TypeError: ``bits`` is not an integer.
        ValueError: ``bits`` is outside 1..32.
    """
    if bits is None:
        return FULL_PRECISION
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise TypeError('bits must be an integer, not {!r}'.format(bits))
    if not 1 <= bits <= FULL_PRECISION:
        raise ValueError('bits={}: must be between 1 and {} ({} means full '
                         'precision)'.format(bits, FULL_PRECISION,
                                             FULL_PRECISION))
    return int(bits)


def check_gradient_bits(bits):
    """Like :func:`check_bits`, for :func:`quantize_gradient`: 2..32."""
    bits = check_bits(bits)
    if bits < 2:
        raise ValueError('gradient bits={}: need at least 2 (a sign bit and '
                         'a magnitude bit)'.format(bits))
    return bits


def check_quantizer(quantizer):
    """Returns ``quantizer`` if it names a quantizer of this module."""
    if quantizer not in QUANTIZERS:
        raise ValueError('quantizer={!r}: must be one of {}'.format(
            quantizer, ', '.join(QUANTIZERS)))
    return quantizer


def _work_dtype(dtype):
    # float16 has too few mantissa bits for the intermediate values (e.g.
    # 255 * x for 8 bits); compute in float32 and round once at the end.
    return numpy.promote_types(dtype, numpy.float32)


def _uniform(xp, shape, dtype):
    """Draws U[0, 1) from the global generator of ``xp``."""
    if xp is numpy:
        return numpy.random.random_sample(shape).astype(dtype, copy=False)
    return xp.random.random_sample(shape, dtype=dtype)


def _round(v, stochastic):
    """Rounds ``v`` to an integer-valued array, in place if deterministic.

    Deterministic: :math:`\\lfloor v + 1/2 \\rfloor` (half up).
    Stochastic: :math:`\\lfloor v \\rfloor + [u < v - \\lfloor v
    \\rfloor]`, :math:`u \\sim U[0, 1)`, whose mean is :math:`v`. NaN stays
    NaN.
    """
    xp = backend.get_array_module(v)
    if not stochastic:
        v += 0.5
        return xp.floor(v, out=v)
    r = utils.force_array(xp.floor(v))
    v -= r  # fraction in [0, 1)
    r += _uniform(xp, v.shape, v.dtype) < v
    return r


def _exp2(e):
    """:math:`2^e`, exact for the integer values of ``e`` (``ldexp``):
    CuPy's ``exp2`` of a float64 can be an ulp off an exact power, e.g.
    :math:`2^{-4}`. Infinities and NaN as ``exp2``."""
    xp = backend.get_array_module(e)
    finite = xp.isfinite(e)
    k = xp.where(finite, e, 0).astype(numpy.int32)
    return xp.where(finite, xp.ldexp(xp.ones_like(e), k), xp.exp2(e))


def _sign(x):
    """sign(x) with sign(0) = +1; NaN stays NaN (so that a diverged value
    cannot hide behind a valid level)."""
    xp = backend.get_array_module(x)
    y = xp.empty_like(x)
    if cpu_kernels.usable(x, y):
        numba_sign(x, y)  # one pass; the same values
        return y

    def sign(x, y):
        # faster than xp.where(x >= 0, 1, -1) on NumPy
        xp.sign(x, out=y)
        y += (y == 0)

    cpu_threads.run(sign, (x, y))
    return y


def _quantize_linear(x, bits, stochastic):
    xp = backend.get_array_module(x)
    if bits == 1 and not stochastic:
        return _sign(x)
    n = 2 ** bits - 1
    v = utils.force_array(xp.clip(x, -1, 1)).astype(
        _work_dtype(x.dtype), copy=False)
    v += 1
    v *= n / 2  # in [0, n]
    i = _round(v, stochastic)
    # (2i - n) / n: exactly -1 and +1 at the ends, symmetric levels
    i *= 2
    i -= n
    i /= n
    return i.astype(x.dtype, copy=False)


def _quantize_log(x, bits, stochastic):
    xp = backend.get_array_module(x)
    if bits == 1:
        # one level of magnitude (1): the stochastic linear quantizer is the
        # stochastic version of sign for this grid too
        return _quantize_linear(x, 1, stochastic)
    dtype = _work_dtype(x.dtype)
    # exponents -(2^(k-1) - 1) .. 0, limited to normal numbers of the dtype
    e_min = max(-(2 ** (bits - 1) - 1), numpy.finfo(dtype).minexp)
    m = utils.force_array(xp.abs(x), dtype)
    m = xp.clip(m, 2.0 ** e_min, 1, out=m)
    e = utils.force_array(xp.log2(m))
    if stochastic:
        # between 2^floor(e) and 2^(floor(e) + 1), up with probability
        # (m - 2^floor(e)) / 2^floor(e): unbiased inside the range
        e = xp.floor(e, out=e)
        p = utils.force_array(m / _exp2(e))
        p -= 1
        e += _uniform(xp, m.shape, dtype) < p
    else:
        e = _round(e, False)
    y = _exp2(e)
    y *= _sign(x)
    return y.astype(x.dtype, copy=False)


def quantize(x, bits=1, quantizer='linear', stochastic=False):
    """Quantizes an array (NumPy or CuPy) to ``bits`` bits.

    See the module documentation for the quantizers and their levels. NaN
    stays NaN. The result has the dtype of ``x`` (computed in float32 for
    float16, then rounded to the nearest float16, so the levels of more
    than a few bits are the float16 values nearest to them).

    Args:
        x (:ref:`ndarray`): Real values.
        bits (int): Bit width, 1..32; 32 or ``None`` only clips to [-1, 1].
        quantizer (str): ``'linear'`` or ``'log'``.
        stochastic (bool): Round stochastically (draws from ``xp.random``).

    Returns:
        :ref:`ndarray`: A new array of the shape and dtype of ``x``.
    """
    bits = check_bits(bits)
    check_quantizer(quantizer)
    if bits == FULL_PRECISION:
        xp = backend.get_array_module(x)
        return utils.force_array(xp.clip(x, -1, 1), x.dtype)
    if quantizer == 'linear':
        return _quantize_linear(x, bits, stochastic)
    return _quantize_log(x, bits, stochastic)


def quantize_gradient(g, bits):
    """Quantizes a gradient to ``bits`` bits with stochastic rounding.

    A sign bit and :math:`k - 1` magnitude bits on a per-tensor power-of-two
    scale :math:`s = 2^{\\lceil \\log_2 \\max|g| \\rceil}` (Hubara et al.,
    sec. 3; WAGE's shift-based scaling):

    .. math::

        q(g) = \\mathrm{sign}(g) \\, \\frac{s}{m} \\,
               \\mathrm{round_{stoch}}\\left(\\frac{|g| \\, m}{s}\\right),
        \\qquad m = 2^{k-1} - 1

    Unlike :func:`quantize`, the grid has a zero, and the sign of every
    element is kept (or the element becomes 0); the error of an element is
    below :math:`s / m \\le 2 \\max|g| / m`, and its expectation is zero.
    ``bits=32`` returns ``g`` itself. NaN anywhere makes all of it NaN.

    Args:
        g (:ref:`ndarray`): Gradient.
        bits (int): 2..32.

    Returns:
        :ref:`ndarray`: Quantized gradient of the shape and dtype of ``g``.
    """
    bits = check_gradient_bits(bits)
    if bits == FULL_PRECISION:
        return g
    xp = backend.get_array_module(g)
    dtype = _work_dtype(g.dtype)
    m = 2 ** (bits - 1) - 1
    a = utils.force_array(xp.abs(g), dtype)
    # an array, not a Python float: no device synchronization on CuPy
    amax = a.max()
    # (a NaN in g makes amax and so all of the result NaN)
    scale = _exp2(xp.ceil(xp.log2(xp.where(amax == 0, 1, amax))))
    a *= m  # then / scale: m / scale can overflow for a tiny scale
    a /= scale
    r = _round(a, True)
    r *= scale  # then / m: scale / m alone can fall below the subnormals
    r /= m
    r *= xp.sign(g)
    return r.astype(g.dtype, copy=False)


def ste_mask(x):
    """Returns :math:`1_{|x| \\le 1}` as an array of ``x``'s dtype.

    This is the gradient of the hard tanh that the straight-through
    estimator puts in place of the quantizer's (zero almost everywhere)
    derivative; it cancels the gradient where :math:`|x| > 1`.
    """
    xp = backend.get_array_module(x)
    return utils.force_array(xp.abs(x) <= 1, x.dtype)


class Quantization(collections.namedtuple('Quantization', (
        'weight_bits', 'activation_bits', 'quantizer', 'stochastic_weights',
        'stochastic_activations', 'gradient_bits', 'error_bits'))):

    """How a network quantizes: one value, checked once, when it is made,
    that the networks of :mod:`net`, the quantized links and functions
    carry.

    Attributes:
        weight_bits (int): Bit width of the weights, 1..32 (32: clip to
            [-1, 1] only).
        activation_bits (int): Bit width of the hidden activations.
        quantizer (str): ``'linear'`` or ``'log'``, for both.
        stochastic_weights (bool): Quantize the weights stochastically in
            training.
        stochastic_activations (bool): Quantize the hidden activations
            stochastically in training.
        gradient_bits (int): Bit width of the weight gradients, 2..32
            (:func:`quantize_gradient`; 32: not quantized).
        error_bits (int): Bit width of the errors propagated between
            layers, 2..32.

    ``None`` bits become 32. The default is the binarized network of the
    paper: sign weights and activations, full-precision gradients.

    Raises:
        TypeError, ValueError: A field is not a valid value.
    """

    __slots__ = ()

    def __new__(cls, weight_bits=1, activation_bits=1, quantizer='linear',
                stochastic_weights=False, stochastic_activations=False,
                gradient_bits=None, error_bits=None):
        return super(Quantization, cls).__new__(
            cls, check_bits(weight_bits), check_bits(activation_bits),
            check_quantizer(quantizer), bool(stochastic_weights),
            bool(stochastic_activations), check_gradient_bits(gradient_bits),
            check_gradient_bits(error_bits))

    @classmethod
    def _make(cls, iterable):
        return cls(*iterable)  # through the checks

    def _replace(self, **changes):
        return type(self)(**dict(self._asdict(), **changes))

    @classmethod
    def of(cls, options):
        """The setting of the options ``options`` (train_mnist.py's
        ``argparse.Namespace``, whose names are the fields')."""
        return cls(*(getattr(options, name) for name in cls._fields))

    @classmethod
    def checked(cls, value):
        """``value`` if it is a :class:`Quantization`, the default for
        ``None``; raises ``TypeError`` otherwise."""
        if value is None:
            return cls()
        if not isinstance(value, cls):
            raise TypeError('quantization must be a qst.Quantization, not '
                            '{!r}'.format(value))
        return value


def quantized_gradient_leaf(g, bits):
    """Quantizes a gradient :class:`~chainer.Variable` made in a backward
    pass (:func:`quantize_gradient`); ``bits=32`` returns ``g`` itself.

    A quantized gradient is a leaf of the backward graph: rounding has no
    useful derivative, so double backprop sees it as a constant.
    """
    if bits == FULL_PRECISION:
        return g
    return chainer.Variable(quantize_gradient(g.array, bits),
                            requires_grad=False)


class QuantizeSTE(function_node.FunctionNode):

    """Quantize in forward, hard-tanh straight-through estimator in backward.

    See :func:`qst`.
    """

    def __init__(self, bits=1, quantizer='linear', stochastic=False):
        self.bits = check_bits(bits)
        self.quantizer = check_quantizer(quantizer)
        self.stochastic = bool(stochastic)

    def check_type_forward(self, in_types):
        type_check._argname(in_types, ('x',))
        x_type, = in_types
        type_check.expect(x_type.dtype.kind == 'f')

    def forward(self, inputs):
        x, = inputs
        self.retain_inputs((0,))
        return quantize(x, self.bits, self.quantizer, self.stochastic),

    def backward(self, indexes, grad_outputs):
        x, = self.get_retained_inputs()
        gy, = grad_outputs
        # The mask is a constant of the backward graph: the derivative of
        # the hard tanh is zero almost everywhere.
        if not chainer.config.enable_backprop and \
                isinstance(x.array, numpy.ndarray):
            # first-order backward on the CPU: the product on the arrays,
            # without the Python work of a multiplication node
            if cpu_kernels.usable(x.array, gy.array):
                gx = numba_ste(x.array, gy.array)  # one pass
            else:
                gx = utils.force_array(gy.array * ste_mask(x.array))
            return chainer.Variable(gx, requires_grad=False),
        return gy * ste_mask(x.array),


def qst(x, bits=1, quantizer='linear', stochastic=False):
    """Quantizes with a straight-through estimator.

    .. math::

        y = q(x), \\qquad g_x = g_y \\cdot 1_{|x| \\le 1}

    where :math:`q` is :func:`quantize` (``bits=1``: sign with
    :math:`\\mathrm{sign}(0) = +1`).

    Args:
        x (:class:`~chainer.Variable` or :ref:`ndarray`): Input of a
            floating point dtype (float16, float32 or float64).
        bits (int): Bit width of the quantized value (32: clip only).
        quantizer (str): ``'linear'`` or ``'log'``.
        stochastic (bool): Round stochastically while
            ``chainer.config.train`` is ``True``; deterministic otherwise.

    Returns:
        ~chainer.Variable: Output of the same shape and dtype as ``x``.
    """
    stochastic = stochastic and chainer.config.train
    y, = QuantizeSTE(bits, quantizer, stochastic).apply((x,))
    return y


# --- numba ------------------------------------------------------------------

def _qst_kernels(numba):
    """``'sign'`` and ``'ste'``, the loops of :func:`numba_sign` and
    :func:`numba_ste`."""
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


_kernels = cpu_kernels.LazyKernels(_qst_kernels)


def numba_sign(x, y):
    """``y[...] = sign(x)`` with sign(0) = +1 and NaN kept, for C-contiguous
    ``x`` and ``y`` of one float dtype."""
    n = x.size
    _kernels['sign'](x.reshape(-1), y.reshape(-1), n)


def numba_ste(x, gy):
    """The straight-through gradient :math:`g_y \\cdot 1_{|x| \\le 1}` (as
    :func:`qst.ste_mask` times ``gy``: 0 times ``gy`` outside, so NaN and
    the sign of zero are those of the product), for C-contiguous ``x`` and
    ``gy`` of one float dtype."""
    gx = numpy.empty_like(gy)
    _kernels['ste'](x.reshape(-1), gy.reshape(-1), gx.reshape(-1),
                    x.size)
    return gx

"""Batch normalization with the batch's statistics followed by the sign,
as one node (training on the CPU).

``qst.qst(F.batch_normalization(x, gamma, beta, ...))``, the hidden block
of both networks, is two FunctionNodes and about fifteen NumPy passes over
the activations. Here it is one node: the statistics and the sums of
backward are those of Chainer's batch normalization (its very NumPy calls,
or, for the statistics of a dense layer, :func:`numba_bn_statistics`,
one numba pass each in NumPy's order), and the elementwise work is three
numba passes (normalize and sign; mask and :math:`g_m \\hat{x}`;
:math:`g_x`: :func:`numba_bn_sign`, :func:`numba_bn_sign_masked`,
:func:`numba_bn_sign_grad`), with the NumPy code below, Chainer's
arithmetic, as their reference. Values and gradients are those of the
two nodes, bit for bit.
"""
import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import function_node
from chainer.functions.normalization import batch_normalization
from chainer.utils import type_check

from qnn.backends import cpu_kernels

# the epsilon of the project's batch normalizations unless told otherwise:
# Chainer's (F.batch_normalization, L.BatchNormalization)
DEFAULT_EPS = 2e-5


def _expanded(*arrays):
    # per-channel arrays shaped to broadcast along axis 1 of (n, c, ...)
    return [a[:, None] for a in arrays]


def _normalized(x, mean, inv_std, gamma, beta):
    # Chainer's _x_hat and _apply_bn_fwd: x_hat and y, for (n, c, s)
    mean, inv_std, gamma, beta = _expanded(mean, inv_std, gamma, beta)
    x_hat = x - mean
    x_hat *= inv_std
    y = x_hat * gamma
    y += beta
    return x_hat, y


def statistics(x, axis):
    """Chainer's batch statistics (GeneralBatchNormalizationImpl.forward),
    the mean and variance over ``axis``; for a C-contiguous dense ``x`` by
    :func:`numba_bn_statistics`, the same values in one pass each."""
    if x.ndim == 2 and cpu_kernels.usable(x):
        return numba_bn_statistics(x)
    return (x.mean(axis=axis, dtype=x.dtype),
            x.var(axis=axis, dtype=x.dtype))


def sign_forward(x, mean, inv_std, gamma, beta):
    """sign(BN(x)) (sign(0) = +1, NaN kept) for C-contiguous ``x``."""
    if cpu_kernels.usable(x, mean, inv_std, gamma, beta):
        return numba_bn_sign(x, mean, inv_std, gamma, beta)
    _, y = _normalized(_as_3d(x), mean, inv_std, gamma, beta)
    q = numpy.sign(y)
    q += q == 0
    return q.reshape(x.shape)


def sign_backward(x, gy, mean, inv_std, gamma, beta, axis):
    """(``g_x``, ``g_gamma``, ``g_beta``): Chainer's backward of batch
    normalization (sums over ``axis``) applied to qst's straight-through
    gradient of the sign, for C-contiguous ``x`` and ``gy``."""
    dtype = x.dtype
    inv_m = dtype.type(1.0 / (x.size // gamma.size))
    if cpu_kernels.usable(x, gy, mean, inv_std, gamma, beta):
        if x.ndim == 2:
            gm, ggamma, gbeta = numba_bn_sign_masked_sums(
                x, gy, mean, inv_std, gamma, beta)
        else:
            gm, gm_x_hat = numba_bn_sign_masked(x, gy, mean, inv_std,
                                                gamma, beta)
            gbeta = gm.sum(axis=axis, dtype=dtype)
            ggamma = gm_x_hat.sum(axis=axis, dtype=dtype)
        return numba_bn_sign_grad(x, gm, mean, inv_std, gamma, ggamma,
                                  gbeta, inv_m), ggamma, gbeta
    x_hat, y = _normalized(_as_3d(x), mean, inv_std, gamma, beta)
    gm = _as_3d(gy) * (numpy.abs(y) <= 1).astype(dtype)
    gbeta = gm.reshape(x.shape).sum(axis=axis, dtype=dtype)
    ggamma = (gm * x_hat).reshape(x.shape).sum(axis=axis, dtype=dtype)
    a, gg, gb = _expanded(gamma * inv_std, ggamma, gbeta)
    gx = a * (gm - (x_hat * gg + gb) * inv_m)
    return gx.reshape(x.shape), ggamma, gbeta


class BatchNormalizationSign(function_node.FunctionNode):

    """sign(BN(x)) in training mode; see :func:`batch_normalization_sign`.
    """

    def __init__(self, eps=DEFAULT_EPS, running_mean=None, running_var=None,
                 decay=0.9):
        self.eps = eps
        self.running_mean = running_mean
        self.running_var = running_var
        self.decay = decay

    def check_type_forward(self, in_types):
        type_check._argname(in_types, ('x', 'gamma', 'beta'))
        x_type, gamma_type, beta_type = in_types
        type_check.expect(
            x_type.dtype.kind == 'f',
            gamma_type.dtype == x_type.dtype,
            beta_type.dtype == x_type.dtype,
            x_type.ndim >= 2,
            gamma_type.ndim == 1,
            gamma_type.shape == beta_type.shape,
            x_type.shape[1] == gamma_type.shape[0],
        )

    def forward_cpu(self, inputs):
        self.retain_inputs((0, 1, 2))
        x, gamma, beta = inputs
        self.axis = (0,) + tuple(range(2, x.ndim))
        self.mean, var = statistics(x, self.axis)
        self.inv_std = numpy.reciprocal(numpy.sqrt(var + self.eps,
                                                   dtype=x.dtype))
        if self.running_mean is not None:
            m = x.size // gamma.size
            adjust = m / max(m - 1., 1.)
            self.running_mean *= self.decay
            self.running_mean += (1 - self.decay) * self.mean
            self.running_var *= self.decay
            self.running_var += (1 - self.decay) * adjust * var
        return sign_forward(numpy.ascontiguousarray(x), self.mean,
                            self.inv_std, gamma, beta),

    def backward(self, indexes, grad_outputs):
        x, gamma, beta = self.get_retained_inputs()
        gy, = grad_outputs
        if chainer.config.enable_backprop or \
                not isinstance(gy.array, numpy.ndarray):
            return self._backward_graph(x, gamma, beta, gy)
        grads = sign_backward(
            numpy.ascontiguousarray(x.array),
            numpy.ascontiguousarray(gy.array), self.mean, self.inv_std,
            gamma.array, beta.array, self.axis)
        return [chainer.Variable(g, requires_grad=False) for g in grads]

    def _backward_graph(self, x, gamma, beta, gy):
        # a differentiable backward: the mask a constant, then the node of
        # Chainer's batch normalization backward
        _, y = _normalized(_as_3d(x.array), self.mean, self.inv_std,
                           gamma.array, beta.array)
        mask = (numpy.abs(y) <= 1).astype(x.dtype).reshape(x.shape)
        expander = [None] * x.ndim
        expander[1] = slice(None)
        grad = batch_normalization.BatchNormalizationGrad(
            self.eps, tuple(expander), self.axis, self.mean, None,
            self.inv_std, (1,),
            batch_normalization.GeneralBatchNormalizationImpl(), None)
        return grad.apply((x, gamma, gy * mask))


def _as_3d(a):
    # (n, c, ...) as a C-contiguous (n, c, s)
    return numpy.ascontiguousarray(a).reshape(a.shape[0], a.shape[1], -1)


def batch_normalization_sign(x, gamma, beta, eps=DEFAULT_EPS,
                             running_mean=None, running_var=None, decay=0.9):
    """The sign of batch normalization with the batch's statistics, with
    the straight-through gradient: on NumPy arrays, the values of

    .. code-block:: python

        qst.qst(F.batch_normalization(x, gamma, beta, eps, running_mean,
                                      running_var, decay))

    (sign(0) = +1, the gradient cancelled where :math:`|y| > 1`), in one
    node, bit for bit for a C-contiguous ``x`` (the sums of NumPy's
    reductions follow the memory layout): the same NumPy calls for the
    statistics (per channel, over every axis but the second) and the sums
    of backward, and the same float operations, in the same order, for
    every element.
    ``running_mean`` and ``running_var``, if given, are updated as Chainer
    updates them. A double backward builds Chainer's graph. NumPy arrays
    only.

    Args:
        x: Input ``(n, c)`` or ``(n, c, h, w)``, float, NumPy.
        gamma, beta: Scale and shift ``(c,)``, of ``x``'s dtype.
        eps (float): Added to the variance.
        running_mean, running_var: Running averages to update, or ``None``.
        decay (float): Decay of the running averages.

    Returns:
        ~chainer.Variable: ±1 (NaN kept), of ``x``'s shape.
    """
    y, = BatchNormalizationSign(eps, running_mean, running_var,
                                decay).apply((x, gamma, beta))
    return y


# --- numba ------------------------------------------------------------------

def _bn_kernels(numba):
    """``'bn_sign'``, ``'bn_sign_masked'``, ``'bn_sign_masked_sums'``,
    ``'bn_sign_grad'`` and ``'bn_statistics'``: the loops of
    :func:`numba_bn_sign`, :func:`numba_bn_sign_masked`,
    :func:`numba_bn_sign_masked_sums`, :func:`numba_bn_sign_grad` and
    :func:`numba_bn_statistics`. Every operation is Chainer's (its
    ``_x_hat``, ``_apply_bn_fwd`` and backward), then qst's sign or
    straight-through mask, in the arrays' dtype and order."""
    normalized, masked = _bn_inline(numba)
    kernels = {'bn_sign': _bn_sign_kernel(numba, normalized)}
    kernels.update(_bn_backward_kernels(numba, masked))
    kernels.update(_bn_statistics_kernel(numba))
    return kernels


def _bn_inline(numba):
    """``normalized(v, mu, r, g, b)``, :math:`(\\hat{x}, y)`, and
    ``masked(v, g, mu, r, gm, b, zero)``, the straight-through gradient of
    the sign of :math:`y` (``g`` times 0 outside :math:`|y| \\le 1`) and
    :math:`\\hat{x}`, inlined in the loops."""
    inline = numba.njit(inline='always')

    @inline
    def normalized(v, mu, r, g, b):
        t = (v - mu) * r
        return t, t * g + b

    @inline
    def masked(v, g, mu, r, gm, b, zero):
        t, y = normalized(v, mu, r, gm, b)
        return (g if abs(y) <= 1 else g * zero), t

    return normalized, masked


def _bn_sign_kernel(numba, normalized):
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

    return numba.njit(cache=True)(bn_sign_loop)


def _bn_backward_kernels(numba, masked):
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

    return {'bn_sign_masked': numba.njit(cache=True)(bn_masked_loop),
            'bn_sign_masked_sums': numba.njit(cache=True)(
                bn_masked_sums_loop),
            'bn_sign_grad': numba.njit(cache=True)(bn_grad_loop)}


def _bn_statistics_kernel(numba):
    """``'bn_statistics'``: the loop of :func:`numba_bn_statistics`."""
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


def _rows(x):
    # (n, c, ...) C-contiguous as the kernels take it: (n, c, s), or
    # (n, 1, c) and last = True when there is no axis after c
    n, c = x.shape[:2]
    return (x.reshape(n, 1, c), True) if x.ndim == 2 else (
        x.reshape(n, c, -1), False)


_kernels = cpu_kernels.LazyKernels(_bn_kernels)


def numba_bn_statistics(x):
    """``(x.mean(axis=0), x.var(axis=0))`` of a C-contiguous ``(n, c)``
    ``x``, in its dtype, bit for bit NumPy's; one pass each, without
    NumPy's temporaries."""
    mean = numpy.empty(x.shape[1], x.dtype)
    var = numpy.empty_like(mean)
    _kernels['bn_statistics'](x, mean, var)
    return mean, var


def numba_bn_sign(x, mean, inv_std, gamma, beta):
    """:math:`\\mathrm{sign}(\\gamma (x - \\mu) r + \\beta)`, channel by
    channel (axis 1) of the C-contiguous ``x`` (the per-channel arrays of
    its dtype), with sign(0) = +1 and NaN kept; one pass."""
    q = numpy.empty_like(x)
    _kernels['bn_sign'](*_rows(x), mean, inv_std, gamma, beta,
                        x.dtype.type(1), _rows(q)[0])
    return q


def numba_bn_sign_masked(x, gy, mean, inv_std, gamma, beta):
    """The straight-through gradient of the sign of
    :math:`y = \\gamma \\hat{x} + \\beta`, :math:`g_m = g_y 1_{|y| \\le 1}`
    (``gy`` times 0 outside), and :math:`g_m \\hat{x}`; one pass."""
    gm = numpy.empty_like(gy)
    gm_x_hat = numpy.empty_like(gy)
    rows, last = _rows(x)
    _kernels['bn_sign_masked'](
        rows, _rows(gy)[0], last, mean, inv_std, gamma, beta,
        x.dtype.type(0), _rows(gm)[0], _rows(gm_x_hat)[0])
    return gm, gm_x_hat


def numba_bn_sign_masked_sums(x, gy, mean, inv_std, gamma, beta):
    """For a C-contiguous dense ``(n, c)`` ``x``: :math:`g_m` of
    :func:`numba_bn_sign_masked` and its sums over the batch,
    :math:`g_\\gamma = \\sum g_m \\hat{x}` and :math:`g_\\beta = \\sum g_m`,
    bit for bit NumPy's ``sum(axis=0)`` of them; one pass."""
    gm = numpy.empty_like(gy)
    ggamma = numpy.empty_like(mean)
    gbeta = numpy.empty_like(mean)
    _kernels['bn_sign_masked_sums'](
        x, gy, mean, inv_std, gamma, beta, x.dtype.type(0), gm, ggamma,
        gbeta)
    return gm, ggamma, gbeta


def numba_bn_sign_grad(x, gm, mean, inv_std, gamma, ggamma, gbeta, inv_m):
    """Chainer's :math:`g_x` of batch normalization with the batch's
    statistics, :math:`\\gamma r (g_m - (\\hat{x} g_\\gamma + g_\\beta)
    / m)`; one pass."""
    gx = numpy.empty_like(gm)
    rows, last = _rows(x)
    _kernels['bn_sign_grad'](rows, _rows(gm)[0], last, mean, inv_std,
                             gamma, ggamma, gbeta, inv_m,
                             _rows(gx)[0])
    return gx

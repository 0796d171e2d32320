"""2-D convolution whose filter is quantized in forward (straight through)."""
import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer.functions.connection import convolution_2d
from chainer.utils import argument
from chainer.utils import conv
from chainer.utils import type_check

from qnn.backends import binary_matmul
from qnn.backends import cpu_kernels
import qst


def im2col(x, kh, kw, sy, sx, ph, pw, dy=1, dx=1, cover_all=False):
    """The patches of ``x`` (``(n, c, h, w)``) as a C-contiguous matrix of
    ``n * oh * ow`` rows ``(i, oy, ox)`` and ``kh * kw * c`` columns
    ``(ky, kx, c)``, the layout in which one matrix product with the filter
    transposed to ``(c_O, kh, kw, c)`` is the convolution; returns it and
    ``(oh, ow)``. One numba pass (:func:`numba_im2col`) where the
    kernels take ``x``, else NumPy (the reference; the same values)."""
    n, c, h, w = x.shape
    oh = conv.get_conv_outsize(h, kh, sy, ph, cover_all, dy)
    ow = conv.get_conv_outsize(w, kw, sx, pw, cover_all, dx)
    args = kh, kw, sy, sx, ph, pw, dy, dx, oh, ow
    if cpu_kernels.usable(x, strided=True):
        return numba_im2col(x, *args), (oh, ow)
    hp, wp = padded_size(x.shape, *args)
    padded = numpy.zeros((n, hp, wp, c), dtype=x.dtype)
    padded[:, ph:ph + h, pw:pw + w] = x.transpose(0, 2, 3, 1)
    s = padded.strides
    patches = numpy.lib.stride_tricks.as_strided(
        padded, (n, oh, ow, kh, kw, c),
        (s[0], sy * s[1], sx * s[2], dy * s[1], dx * s[2], s[3]))
    return numpy.ascontiguousarray(patches).reshape(n * oh * ow, -1), \
        (oh, ow)


def col2im(col, shape, kh, kw, sy, sx, ph, pw, dy, dx, out_size):
    """The adjoint of :func:`im2col`: the C-contiguous array of ``shape``
    whose every element sums from 0, in the order ``(ky, kx)`` of
    Chainer's ``col2im_cpu``, the entries of ``col`` it was copied to. One
    numba pass (:func:`numba_col2im`) where the kernels take ``col``,
    else NumPy (the reference; the same sums in the same order)."""
    n, c, h, w = shape
    oh, ow = out_size
    args = kh, kw, sy, sx, ph, pw, dy, dx, oh, ow
    if cpu_kernels.usable(col):
        return numba_col2im(col, shape, *args)
    hp, wp = padded_size(shape, *args)
    padded = numpy.zeros((n, hp, wp, c), dtype=col.dtype)
    col = col.reshape(n, oh, ow, kh, kw, c)
    for ky in range(kh):
        for kx in range(kw):
            padded[:, ky * dy:ky * dy + sy * (oh - 1) + 1:sy,
                   kx * dx:kx * dx + sx * (ow - 1) + 1:sx] += col[:, :, :, ky,
                                                                  kx]
    return numpy.ascontiguousarray(
        padded[:, ph:ph + h, pw:pw + w].transpose(0, 3, 1, 2))


def _channels_last(W):
    # (c_O, c, kh, kw) as the matrix (c_O, kh * kw * c) of im2col's columns
    return W.transpose(0, 2, 3, 1).reshape(len(W), -1)


class QuantizedConvolution2DFunction(convolution_2d.Convolution2DFunction):

    """Convolution with quantized filter; see :func:`quantized_convolution_2d`.

    On a GPU (and for grouped convolutions) the arithmetic is Chainer's own
    :class:`Convolution2DFunction` (cuDNN or CuPy) applied to :math:`q(W)`;
    this class adds the quantization and the straight-through backward
    pass.

    On the CPU (NumPy arrays, ``groups=1``) forward takes the patches once
    (:func:`im2col`, in the order of the product) and keeps them for
    backward: one copy of the input and one matrix product, where
    Chainer's ``tensordot`` copies its im2col buffer again and its
    backward takes the patches anew. A first-order backward runs on the
    arrays (:meth:`_backward_patches`); a graph for double backward is
    Chainer's.
    """

    def __init__(self, stride=1, pad=0, cover_all=False, quantization=None,
                 stochastic=False, **kwargs):
        super(QuantizedConvolution2DFunction, self).__init__(
            stride, pad, cover_all, **kwargs)
        self.quantization = qst.Quantization.checked(quantization)
        # stochastic rounding of W in this call (training only)
        self.stochastic = bool(stochastic)

    def check_type_forward(self, in_types):
        n_in = in_types.size()
        type_check.expect(2 <= n_in, n_in <= 3)
        x_type, w_type = in_types[:2]
        type_check._argname((x_type, w_type), ('x', 'W'))
        if type_check.eval(n_in) == 3:
            type_check._argname((in_types[2],), ('b',))
        super(QuantizedConvolution2DFunction, self).check_type_forward(
            in_types)
        # q(W) has W's dtype; Chainer's convolution would accept a mix, the
        # dense layer does not: the same rule for both
        type_check.expect(w_type.dtype == x_type.dtype)

    def forward_chainerx(self, inputs):
        # ChainerX's conv would see the real W; forward() quantizes it.
        return chainer.Fallback

    def forward(self, inputs):
        x, W = inputs[:2]
        # q(W) is computed once and kept for backward.
        q = self.quantization
        self.W_quantized = qst.quantize(W, q.weight_bits, q.quantizer,
                                        self.stochastic)
        self.col = None
        if isinstance(x, numpy.ndarray) and self.groups == 1:
            return self._forward_patches(x, inputs[2:])
        # Chainer's forward_cpu/forward_gpu (which retain x and W)
        return super(QuantizedConvolution2DFunction, self).forward(
            (x, self.W_quantized) + tuple(inputs[2:]))

    def _forward_patches(self, x, b):
        # y[(i, oy, ox), o] = col . q(W)[o], one matrix product; its sums
        # run over (ky, kx, c) where Chainer's run over (c, ky, kx): the
        # same values where the sums are exact (a binarized input), else
        # the same up to float rounding. Returned as Chainer returns it,
        # an (n, c_O, oh, ow) view of (n, oh, ow, c_O).
        self.retain_inputs((0, 1))
        Wq = self.W_quantized
        kh, kw = Wq.shape[2:]
        self.col, self.out_size = im2col(
            x, kh, kw, self.sy, self.sx, self.ph, self.pw, self.dy, self.dx,
            self.cover_all)
        # patches of +-1 and the padding's zeros: exact integers by XNOR
        # and popcount
        y = binary_matmul.dot(self.col, _channels_last(Wq),
                              self.quantization.weight_bits == 1)
        if b:
            y += b[0]
        return y.reshape((len(x),) + self.out_size + (-1,)).transpose(
            0, 3, 1, 2),

    def _backward_patches(self, indexes, x, gy):
        # the first-order backward of _forward_patches on the arrays:
        # g_x = col2im(g_y q(W)), g_W = g_y^T col, g_b = sum of g_y (as
        # Chainer sums it)
        gb = gy.sum(axis=(0, 2, 3)) if 2 in indexes else None  # Chainer's
        gy = gy.transpose(0, 2, 3, 1).reshape(-1, gy.shape[1])
        Wq = self.W_quantized
        ret = []
        if 0 in indexes:
            gx = col2im(gy.dot(_channels_last(Wq)), x.shape,
                        Wq.shape[2], Wq.shape[3], self.sy, self.sx, self.ph,
                        self.pw, self.dy, self.dx, self.out_size)
            ret.append(qst.quantized_gradient_leaf(
                chainer.Variable(gx, requires_grad=False),
                self.quantization.error_bits))
        if 1 in indexes:
            gW = gy.T.dot(self.col).reshape(
                (len(Wq),) + Wq.shape[2:] + Wq.shape[1:2])
            gW = numpy.ascontiguousarray(gW.transpose(0, 3, 1, 2))
            ret.append(qst.quantized_gradient_leaf(
                chainer.Variable(gW, requires_grad=False),
                self.quantization.gradient_bits))
        if 2 in indexes:
            ret.append(chainer.Variable(gb, requires_grad=False))
        # freed as soon as used; a second backward (a retained graph) takes
        # Chainer's way
        self.col = None
        return ret

    def backward(self, indexes, grad_outputs):
        x, W = self.get_retained_inputs()
        gy, = grad_outputs
        if self.col is not None and not chainer.config.enable_backprop \
                and isinstance(gy.array, numpy.ndarray):
            return self._backward_patches(indexes, x.array, gy.array)
        ret = []
        if 0 in indexes:
            # g_x = deconv(g_y, q(W)); q(W) is a constant of the backward
            # graph (its true derivative is zero almost everywhere)
            Wq = chainer.Variable(self.W_quantized, requires_grad=False,
                                  layout=W.layout)
            gx = chainer.functions.deconvolution_2d(
                gy, Wq, stride=(self.sy, self.sx), pad=(self.ph, self.pw),
                outsize=x.shape[2:], dilate=(self.dy, self.dx),
                groups=self.groups)
            ret.append(qst.quantized_gradient_leaf(
                gx, self.quantization.error_bits))
        rest = [i for i in indexes if i != 0]
        if rest:
            # Chainer's g_W (from x and g_y, W's shape only) is the gradient
            # with respect to q(W), handed straight through to W; g_b does
            # not involve W at all.
            grads = super(QuantizedConvolution2DFunction, self).backward(
                rest, grad_outputs)
            for i, g in zip(rest, grads):
                if i == 1:
                    g = qst.quantized_gradient_leaf(
                        g, self.quantization.gradient_bits)
                ret.append(g)
        return ret


def quantized_convolution_2d(x, W, b=None, stride=1, pad=0,
                             quantization=None, **kwargs):
    """quantized_convolution_2d(x, W, b=None, stride=1, pad=0, \
quantization=None, *, cover_all=False, dilate=1, groups=1)

    Two-dimensional convolution with a quantized filter.

    .. math::

        y = q(W) \\star x + b, \\qquad
        g_x = \\frac{\\partial L}{\\partial x}\\Big|_{q(W)}, \\qquad
        g_W = \\frac{\\partial L}{\\partial q(W)}

    where :math:`\\star` is the convolution (correlation) of
    :func:`chainer.functions.convolution_2d` and :math:`q` is
    :func:`qst.quantize` of ``quantization.weight_bits`` bits (1: sign with
    :math:`\\mathrm{sign}(0) = +1`), computed once per call; the gradients
    are those of Chainer's convolution with :math:`q(W)` as its filter,
    handed straight through to the real-valued :math:`W` as in
    :func:`function_quantized_linear.quantized_linear`, with the same
    ``gradient_bits`` and ``error_bits``. :math:`q(W)` is a constant of the
    graph built by backward.

    Args:
        x (:class:`~chainer.Variable` or :ref:`ndarray`): Input of shape
            :math:`(n, c_I, h_I, w_I)` with float dtype.
        W (:class:`~chainer.Variable` or :ref:`ndarray`): Real-valued filter
            of shape :math:`(c_O, c_I / \\mathrm{groups}, h_K, w_K)` and the
            dtype of ``x``.
        b (:class:`~chainer.Variable` or :ref:`ndarray`): Bias of shape
            :math:`(c_O,)`, or ``None``. Not quantized.
        stride (int or pair of ints): Stride of filter applications.
        pad (int or pair of ints): Spatial padding width.
        quantization (qst.Quantization): As in
            :func:`function_quantized_linear.quantized_linear`.
        cover_all (bool): As in :func:`chainer.functions.convolution_2d`.
        dilate (int or pair of ints): Dilation factor of filter applications.
        groups (int): Number of groups of channels.

    Returns:
        ~chainer.Variable: Output of shape :math:`(n, c_O, h_O, w_O)`.
    """
    quantization = qst.Quantization.checked(quantization)
    cover_all, dilate, groups, cudnn_fast = argument.parse_kwargs(
        kwargs, ('cover_all', False), ('dilate', 1), ('groups', 1),
        ('cudnn_fast', False))
    args = (x, W) if b is None else (x, W, b)
    stochastic = quantization.stochastic_weights and chainer.config.train
    y, = QuantizedConvolution2DFunction(
        stride, pad, cover_all, quantization, stochastic, dilate=dilate,
        groups=groups, cudnn_fast=cudnn_fast).apply(args)
    return y


# --- numba ------------------------------------------------------------------

def _convolution_kernels(numba):
    """``'im2col'`` and ``'col2im'``, the loops of :func:`numba_im2col` and
    :func:`numba_col2im`."""
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


_kernels = cpu_kernels.LazyKernels(_convolution_kernels)


def numba_im2col(x, kh, kw, sy, sx, ph, pw, dy, dx, oh, ow):
    """The patches of a convolution as one matrix, in one pass: row
    ``(i, oy, ox)``, column ``(ky, kx, c)``, the element
    ``x[i, c, oy * sy + ky * dy - ph, ox * sx + kx * dx - pw]`` (0 outside
    ``x``). ``x`` is a 4-D float array of any strides; the result is
    ``(n * oh * ow, kh * kw * c)``, C-contiguous."""
    n, c = x.shape[:2]
    col = numpy.empty((n, oh, ow, kh * kw * c), dtype=x.dtype)
    _kernels['im2col'](x, col, kh, kw, sy, sx, ph, pw, dy, dx,
                       *padded_size(x.shape, kh, kw, sy, sx, ph, pw, dy, dx,
                                    oh, ow))
    return col.reshape(n * oh * ow, -1)


def padded_size(shape, kh, kw, sy, sx, ph, pw, dy, dx, oh, ow):
    """The rows and columns of the zero-padded image that :func:`numba_im2col`
    and :func:`numba_col2im` work through: the image of ``shape`` after the
    padding, and all that the ``oh * ow`` patches reach."""
    h, w = shape[2:]
    return (max(h + ph, (oh - 1) * sy + (kh - 1) * dy + 1),
            max(w + pw, (ow - 1) * sx + (kw - 1) * dx + 1))


def numba_col2im(col, shape, kh, kw, sy, sx, ph, pw, dy, dx, oh, ow):
    """The adjoint of :func:`numba_im2col`: each element of an array of
    ``shape`` ``(n, c, h, w)`` summed from 0 over the entries of ``col``
    it was copied to, in the order (ky, kx) of Chainer's ``col2im_cpu``.
    ``col`` is C-contiguous; the result is C-contiguous."""
    gx = numpy.empty(shape, dtype=col.dtype)
    _kernels['col2im'](
        col.reshape(shape[0], oh, ow, -1), gx, kh, kw, sy, sx, ph, pw, dy,
        dx, *padded_size(shape, kh, kw, sy, sx, ph, pw, dy, dx, oh, ow))
    return gx

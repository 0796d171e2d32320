"""2x2 max pooling with stride 2, without im2col.

Chainer's :func:`chainer.functions.max_pooling_2d` copies its input into
an im2col buffer and takes ``argmax`` over it, and its backward goes
through col2im: about a fifth of a training step of the binarized ConvNet
on the CPU. With a 2x2 window and stride 2 the four elements of each
window are four strided views of the input: the maximum is three
elementwise maxima, and which element gave it three comparisons. On the
CPU one numba pass does the same (:func:`numba_max_pool_2x2` and
:func:`numba_max_pool_2x2_grad`, tested against this NumPy code).
"""
import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
from chainer import backend
from chainer import function_node
from chainer.utils import type_check

from qnn.backends import cpu_kernels

# (row, column) of each window element, in the order of Chainer's im2col
# (row-major): its argmax picks the first of equal maxima, and so does this
OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))


def _padded(x, fill):
    """``x`` with an odd height or width padded by one row or column of
    ``fill`` at the bottom or right (Chainer's ``cover_all=True``)."""
    n, c, h, w = x.shape
    if h % 2 == 0 and w % 2 == 0:
        return x
    xp = backend.get_array_module(x)
    padded = xp.full((n, c, h + h % 2, w + w % 2), fill, dtype=x.dtype)
    padded[:, :, :h, :w] = x
    return padded


class MaxPooling2x2(function_node.FunctionNode):

    """2x2 max pooling with stride 2; see :func:`max_pooling_2x2`."""

    def check_type_forward(self, in_types):
        type_check._argname(in_types, ('x',))
        x_type, = in_types
        type_check.expect(x_type.dtype.kind == 'f', x_type.ndim == 4)

    def forward(self, inputs):
        x, = inputs
        self._in_shape = x.shape
        if cpu_kernels.usable(x, strided=True):
            y, self.index = numba_max_pool_2x2(x)
            return y,
        xp = backend.get_array_module(x)
        padded = _padded(x, -float('inf'))
        windows = [padded[:, :, i::2, j::2] for i, j in OFFSETS]
        # C-contiguous, as Chainer's pooling returns it (a convolution's
        # output is a transposed view, and elementwise results keep its
        # layout): the sums of the batch normalization after it then run
        # in the same order
        y = xp.ascontiguousarray(xp.maximum(
            xp.maximum(windows[0], windows[1]),
            xp.maximum(windows[2], windows[3])))
        # the first window element equal to the maximum
        index = xp.full(y.shape, len(OFFSETS) - 1, dtype='b')
        for k in range(len(OFFSETS) - 2, -1, -1):
            index[windows[k] == y] = k
        self.index = index
        return y,

    def backward(self, indexes, grad_outputs):
        return MaxPooling2x2Grad(self).apply(grad_outputs)


class MaxPooling2x2Grad(function_node.FunctionNode):

    """The gradient of :class:`MaxPooling2x2`: each output's gradient goes
    to the element of its window that was the maximum."""

    def __init__(self, pooling):
        self.index = pooling.index
        self._in_shape = pooling._in_shape

    def forward(self, inputs):
        gy, = inputs
        if cpu_kernels.usable(gy, strided=True):
            # channels last, the layout of a convolution's output: its
            # backward takes the gradient without a copy
            return numba_max_pool_2x2_grad(gy, self.index,
                                           self._in_shape),
        xp = backend.get_array_module(gy)
        n, c, h, w = self._in_shape
        gx = xp.zeros((n, c, h + h % 2, w + w % 2), dtype=gy.dtype)
        for k, (i, j) in enumerate(OFFSETS):
            gx[:, :, i::2, j::2] = xp.where(self.index == k, gy, 0)
        return gx[:, :, :h, :w],

    def backward(self, indexes, grad_outputs):
        return MaxPooling2x2Gather(self).apply(grad_outputs)


class MaxPooling2x2Gather(function_node.FunctionNode):

    """Picks, for each window, the element :class:`MaxPooling2x2` chose:
    the gradient of :class:`MaxPooling2x2Grad`, and linear, so its own
    gradient is that function again."""

    def __init__(self, grad):
        self.grad = grad

    def forward(self, inputs):
        ggx, = inputs
        xp = backend.get_array_module(ggx)
        padded = _padded(ggx, 0)
        index = self.grad.index
        ggy = xp.zeros(index.shape, dtype=ggx.dtype)
        for k, (i, j) in enumerate(OFFSETS):
            ggy += xp.where(index == k, padded[:, :, i::2, j::2], 0)
        return ggy,

    def backward(self, indexes, grad_outputs):
        return MaxPooling2x2Grad(self.grad).apply(grad_outputs)


def max_pooling_2x2(x):
    """2x2 max pooling with stride 2, as
    ``chainer.functions.max_pooling_2d(x, 2)`` computes it.

    .. math::

        y_{n,c,i,j} = \\max_{0 \\le a, b \\le 1} x_{n,c,2i+a,2j+b}

    An odd height or width rounds up (Chainer's default ``cover_all=True``:
    the last window covers one row or column). The gradient goes to the
    maximum of each window, the first in row-major order among equal ones,
    as in Chainer; so the values and gradients are those of
    :func:`chainer.functions.max_pooling_2d` with ``ksize=2``, exactly.

    Args:
        x (:class:`~chainer.Variable` or :ref:`ndarray`): Input of shape
            ``(n, c, h, w)``.

    Returns:
        ~chainer.Variable: Output of shape ``(n, c, ceil(h / 2),
        ceil(w / 2))``.
    """
    y, = MaxPooling2x2().apply((x,))
    return y


# --- numba ------------------------------------------------------------------

def _pooling_kernels(numba):
    """``'max_pool_2x2'`` and ``'max_pool_2x2_grad'``, the loops of
    :func:`numba_max_pool_2x2` and :func:`numba_max_pool_2x2_grad`, on arrays
    viewed channels last, ``(n, h, w, c)``: the inner loop runs over the
    channels of one window, contiguous in a convolution's output."""
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


_kernels = cpu_kernels.LazyKernels(_pooling_kernels)


def numba_max_pool_2x2(x):
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
    _kernels['max_pool_2x2'](x.transpose(0, 2, 3, 1), y, index)
    # written channels last (contiguous runs), then made C-contiguous
    return (numpy.ascontiguousarray(y.transpose(0, 3, 1, 2)),
            index.transpose(0, 3, 1, 2))


def numba_max_pool_2x2_grad(gy, index, shape):
    """The gradient of :func:`numba_max_pool_2x2` for an input of ``shape``:
    each window's element ``index`` gets ``gy``, the window's other
    elements 0; returned channels last (a view ``(n, c, h, w)`` of
    ``(n, h, w, c)``)."""
    n, c, h, w = shape
    gx = numpy.empty((n, h, w, c), gy.dtype)
    _kernels['max_pool_2x2_grad'](
        numpy.ascontiguousarray(gy.transpose(0, 2, 3, 1)),
        index.transpose(0, 2, 3, 1), gx)
    return gx.transpose(0, 3, 1, 2)

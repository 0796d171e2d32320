"""2x2 max pooling with stride 2, without im2col.

Chainer's :func:`chainer.functions.max_pooling_2d` copies its input into
an im2col buffer and takes ``argmax`` over it, and its backward goes
through col2im: about a fifth of a training step of the binarized ConvNet
on the CPU. With a 2x2 window and stride 2 the four elements of each
window are four strided views of the input: the maximum is three
elementwise maxima, and which element gave it three comparisons. On the
CPU one numba pass does the same (:func:`cpu_kernels.max_pool_2x2` and
:func:`cpu_kernels.max_pool_2x2_grad`, tested against this NumPy code).
"""
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
            y, self.index = cpu_kernels.max_pool_2x2(x)
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
            return cpu_kernels.max_pool_2x2_grad(gy, self.index,
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


"""The sum-of-squared-errors loss of WAGE's MNIST networks."""
from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.functions as F


def sum_squared_error(y, t):
    """Half the squared distance of the outputs to the one-hot targets,
    summed over the classes, averaged over the minibatch:

    .. math::

        \\ell = \\frac{1}{N} \\sum_{n=1}^{N} \\frac{1}{2}
                \\sum_{c} (y_{nc} - [t_n = c])^2

    WAGE's loss (``lossFunc = 'SSE'``) sums over the minibatch too; its
    quantized errors and steps are divided by a power of two near their
    largest element, so the factor :math:`1/N` does not change training,
    only the reported value.

    Args:
        y (:class:`~chainer.Variable` or :ref:`ndarray`): Outputs, (N, C).
        t (:ref:`ndarray`): Labels, (N,), int32.

    Returns:
        ~chainer.Variable: A scalar of ``y``'s dtype.
    """
    xp = chainer.backend.get_array_module(y)
    onehot = xp.eye(y.shape[1], dtype=y.dtype)[chainer.as_array(t)]
    return F.sum(F.square(y - onehot)) * (0.5 / len(y))


def softmax_sum_squared_error(y, t):
    """:func:`sum_squared_error` of the softmax of the outputs:

    .. math::

        \\ell = \\frac{1}{N} \\sum_{n=1}^{N} \\frac{1}{2}
                \\sum_{c} (\\mathrm{softmax}(y_n)_c - [t_n = c])^2

    the loss of the seed logs' LeNet-5, whose last layer is a softmax
    (``qsoftmax``) trained towards the one-hot targets by squared error.
    """
    return sum_squared_error(F.softmax(y), t)

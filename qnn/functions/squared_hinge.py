"""Squared hinge loss on targets 2 onehot(t) - 1 (Courbariaux et al. 2016)."""
from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer.functions as F


def squared_hinge(x, t, reduce='mean'):
    """Squared hinge loss of the BinaryNet recipes, reduced as Theano's.

    With :math:`N` examples, :math:`K` classes and targets
    :math:`T_{nk} = 2 \\cdot [t_n = k] - 1 \\in \\{-1, +1\\}`:

    .. math::

        L = \\frac{1}{N K} \\sum_{n=1}^N \\sum_{k=1}^K
            \\max(0, 1 - T_{nk} x_{nk})^2

    the mean over *all* :math:`N K` elements, as the Theano BinaryNet
    recipe's ``T.mean(T.sqr(T.maximum(0., 1. - target * output)))``.

    :func:`chainer.functions.hinge` with ``norm='L2'`` computes exactly the
    elementwise terms (it negates :math:`x_{nt_n}`, i.e. multiplies by
    :math:`T`, and squares :math:`\\max(0, 1 + \\cdot)`), but its
    ``reduce='mean'`` divides the sum by :math:`N` only: :math:`K` times this
    loss, and :math:`K` times its gradients. With Adam the factor would
    mostly cancel out (Adam is invariant to a constant gradient scale, up to
    :math:`\\epsilon`); with the shift-based AdaMax or SGD it would not, so
    this function reduces as the paper's code does.

    The gradient is :math:`-2 T_{nk} \\max(0, 1 - T_{nk} x_{nk}) / (N K)`
    (Chainer's ``hinge``; it is continuous, and 0 at the margin).

    Args:
        x (:class:`~chainer.Variable` or :ref:`ndarray`): Scores,
            shape :math:`(N, K)`.
        t (:class:`~chainer.Variable` or :ref:`ndarray`): Labels
            (``int32``), shape :math:`(N,)`, as for
            :func:`chainer.functions.softmax_cross_entropy`; usable as
            ``lossfun`` of :class:`chainer.links.Classifier`.
        reduce (str): ``'mean'`` (the scalar :math:`L`) or ``'no'``: the
            :math:`(N, K)` array of the terms
            :math:`\\max(0, 1 - T_{nk} x_{nk})^2`.

    Returns:
        ~chainer.Variable: The loss.
    """
    if reduce not in ('mean', 'no'):
        raise ValueError(
            "reduce must be 'mean' or 'no', got {!r}".format(reduce))
    terms = F.hinge(x, t, norm='L2', reduce='no')
    if reduce == 'no':
        return terms
    return F.mean(terms)

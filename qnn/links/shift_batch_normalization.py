"""Shift-based batch normalization link (Hubara et al. 2016)."""
import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import initializers
from chainer import link
from chainer import variable

from qnn.functions import shift_batch_normalization as fsbn
from qnn.functions.batch_normalization_sign import DEFAULT_EPS


class ShiftBatchNormalization(link.Link):

    """Batch normalization whose scale is a power of two.

    Used like :class:`chainer.links.BatchNormalization` (same ``size``,
    ``decay``, ``eps``, ``dtype``, parameters ``gamma`` and ``beta``,
    persistents ``avg_mean``, ``avg_var`` and ``N``), it computes
    :func:`qnn.functions.shift_batch_normalization.shift_batch_normalization`
    with the batch statistics while ``chainer.config.train`` is ``True``,
    updating the running averages, and the same module's
    :func:`fixed_shift_batch_normalization` with the running averages
    otherwise:

    .. math::

        y = \\mathrm{AP2}(\\gamma) \\,
            \\mathrm{AP2}\\bigl((\\sigma^2 + \\epsilon)^{-1/2}\\bigr)
            (x - \\mu) + \\beta

    Only the normalization over axis 0 (and the axes after 1) is supported,
    as for ``(N, C)`` and ``(N, C, H, W)`` inputs; no ``finetune``.
    :func:`qnn.training.multi_node.synchronize_batch_normalization` does not
    replace this link: under ChainerMN each process keeps its own statistics.

    Args:
        size (int): Number of channels.
        decay (float): Decay rate of the running averages
            (:math:`d` in :math:`\\bar{\\mu} \\leftarrow d \\bar{\\mu} +
            (1 - d) \\mu`).
        eps (float): Added to the variance.
        dtype: Type of the parameters and statistics (default
            ``chainer.config.dtype``).
        initial_gamma, initial_beta: Initializers (default 1 and 0).
    """

    def __init__(self, size, decay=0.9, eps=DEFAULT_EPS, dtype=None,
                 initial_gamma=None, initial_beta=None):
        super(ShiftBatchNormalization, self).__init__()
        if eps <= 0:
            raise ValueError('eps must be positive, got {}'.format(eps))
        if not 0 <= decay < 1:
            raise ValueError('decay must be in [0, 1), got {}'.format(decay))
        dtype = chainer.get_dtype(dtype)
        self.decay = decay
        self.eps = eps
        self.avg_mean = numpy.zeros(size, dtype=dtype)
        self.avg_var = numpy.ones(size, dtype=dtype)
        self.N = 0
        self.register_persistent('avg_mean')
        self.register_persistent('avg_var')
        self.register_persistent('N')
        initial = []
        for value, default in ((initial_gamma, 1), (initial_beta, 0)):
            initializer = initializers._get_initializer(
                default if value is None else value)
            initializer.dtype = dtype
            initial.append(initializer)
        with self.init_scope():
            self.gamma = variable.Parameter(initial[0], size)
            self.beta = variable.Parameter(initial[1], size)

    def forward(self, x):
        """Normalizes ``x`` (shape ``(N, C, ...)``)."""
        if chainer.config.train:
            self.N += 1
            return fsbn.shift_batch_normalization(
                x, self.gamma, self.beta, self.eps, self.avg_mean,
                self.avg_var, self.decay)
        return fsbn.fixed_shift_batch_normalization(
            x, self.gamma, self.beta, self.avg_mean, self.avg_var, self.eps)

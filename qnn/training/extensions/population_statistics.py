"""Batch normalization's population statistics, as its inference defines them.

Ioffe and Szegedy (2015, Algorithm 2) normalize at inference with the
averages over training minibatches :math:`B` of size :math:`m`:

.. math::

    \\mathrm{E}[x] = \\mathrm{E}_B[\\mu_B], \\qquad
    \\mathrm{Var}[x] = \\frac{m}{m - 1} \\mathrm{E}_B[\\sigma_B^2].

Chainer (and BinaryNet's Lasagne and Torch7 code) keep running averages
instead, with decay 0.9: about the last 19 minibatches count. In a binarized
network each unit's threshold is the sign of its normalized value, so that
noise moves test accuracy from epoch to epoch; :class:`PopulationStatistics`
replaces the running averages by the exact ones before each evaluation.
"""
import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer.training import extension

from qnn.iterators.array_iterator import ArrayIterator
from qnn.iterators.array_iterator import concat_batch


def normalization_links(model):
    """The links of ``model`` that keep running statistics (``avg_mean``,
    ``avg_var`` updated with ``decay``): Chainer's BatchNormalization and
    :class:`qnn.links.shift_batch_normalization.ShiftBatchNormalization`."""
    return [link for link in model.links()
            if all(hasattr(link, name)
                   for name in ('avg_mean', 'avg_var', 'decay'))]


def estimate(predictor, dataset, n_images, batch_size, device=None):
    """Sets every normalization link's ``avg_mean`` and ``avg_var`` to the
    averages of Algorithm 2 over the first ``n_images`` of ``dataset`` (whole
    minibatches of ``batch_size``), each computed in training mode (every
    layer normalized by its minibatch statistics), without gradients.

    The k-th minibatch updates the averages with decay ``1 - 1/k``, which
    makes them the plain means (Chainer's ``finetune`` arithmetic); the
    links' own ``decay`` is restored afterwards. NumPy's global random state
    is restored too, so a run draws the same minibatch orders, shifts and
    stochastic bits with or without this.

    Args:
        predictor (chainer.Link): Called on a minibatch of images.
        dataset: ``(images, labels)`` rows, as the training set.
        n_images (int): At least ``batch_size``; at most ``len(dataset)``.
        batch_size (int): The training minibatch size (the ``m`` above).
        device: Where the images go (the predictor's device).
    """
    if not batch_size <= n_images <= len(dataset):
        raise ValueError('n_images={} must be in [batch_size, len(dataset)] '
                         '= [{}, {}]'.format(n_images, batch_size,
                                             len(dataset)))
    links = normalization_links(predictor)
    decays = [link.decay for link in links]
    random_state = numpy.random.get_state()
    batches = ArrayIterator(dataset, batch_size, repeat=False, shuffle=False)
    try:
        with chainer.using_config('train', True), \
                chainer.no_backprop_mode():
            for k in range(n_images // batch_size):
                for link in links:
                    link.decay = 1.0 - 1.0 / (k + 1)
                predictor(concat_batch(batches.next(), device)[0])
    finally:
        for link, decay in zip(links, decays):
            link.decay = decay
        numpy.random.set_state(random_state)


class PopulationStatistics(extension.Extension):

    """Trainer extension: :func:`estimate` on the training set before each
    evaluation, so that the evaluators (and the snapshot) see the
    population statistics of the weights just trained.

    Training itself does not read the running statistics (a minibatch is
    normalized by its own), so the weights a run learns are the same with
    or without this extension.

    Args:
        predictor (chainer.Link): The network (not its loss wrapper).
        dataset: The training set (unaugmented).
        n_images (int): How many of its first images to average over.
        batch_size (int): The training minibatch size.
        device: The predictor's device.
    """
    trigger = 1, 'epoch'
    # after the updater's epoch, before the evaluators (PRIORITY_WRITER)
    priority = extension.PRIORITY_WRITER + 1

    def __init__(self, predictor, dataset, n_images, batch_size,
                 device=None):
        self.predictor = predictor
        self.dataset = dataset
        self.n_images = n_images
        self.batch_size = batch_size
        self.device = device

    def __call__(self, trainer=None):
        estimate(self.predictor, self.dataset, self.n_images,
                 self.batch_size, self.device)

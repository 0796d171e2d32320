"""A SerialIterator that takes each minibatch from the dataset's arrays by
index, and its converter.

Chainer's :class:`~chainer.iterators.SerialIterator` builds a minibatch as a
list of per-example tuples, which
:func:`~chainer.dataset.concat_examples` then stacks back into arrays: for
batches of 100 MNIST images, a few hundred Python calls and copies per step.
When the dataset is a :class:`~chainer.datasets.TupleDataset` of arrays (or
a :class:`~chainer.datasets.SubDataset` of one, as
:func:`~chainer.datasets.split_dataset` and ChainerMN's scatter make),
:class:`ArrayIterator` gathers each column with one fancy index instead.
"""
import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer.iterators import _statemachine


def dataset_columns(dataset):
    """``(columns, index)`` such that example ``i`` of ``dataset`` is
    ``tuple(c[index[i]] for c in columns)`` (``index`` ``None``: the
    identity), or ``None`` when ``dataset`` is not built of arrays that way.
    """
    if isinstance(dataset, chainer.datasets.TupleDataset):
        columns = dataset._datasets
        if all(isinstance(c, chainer.get_array_types()) for c in columns):
            return tuple(columns), None
        return None
    if isinstance(dataset, chainer.datasets.SubDataset):
        base = dataset_columns(dataset._dataset)
        if base is None:
            return None
        columns, base_index = base
        index = numpy.arange(dataset._start, dataset._finish)
        if dataset._order is not None:
            index = numpy.asarray(dataset._order)[index]
        if base_index is not None:
            index = base_index[index]
        return columns, index
    return None


class ArrayBatch(object):

    """A minibatch as one array per column (``columns``).

    It also reads as the list of examples that
    :class:`~chainer.iterators.SerialIterator` returns (``len``, indexing,
    iteration give per-example tuples), so any converter still gets the
    right arrays; :func:`concat_batch` just hands the columns over.
    """

    def __init__(self, columns):
        self.columns = columns

    def __len__(self):
        return len(self.columns[0])

    def __getitem__(self, i):
        return tuple(c[i] for c in self.columns)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


class ArrayIterator(chainer.iterators.SerialIterator):

    """:class:`~chainer.iterators.SerialIterator` that returns
    :class:`ArrayBatch` minibatches gathered by index.

    Same arguments, order of examples (the same random draws for a given
    seed), epochs, ``is_new_epoch`` and snapshot state as SerialIterator: a
    snapshot of one resumes the other. A dataset that is not made of arrays
    (see :func:`dataset_columns`) is iterated exactly as SerialIterator
    does, with lists of examples.
    """

    def __init__(self, dataset, batch_size, repeat=True, shuffle=None,
                 order_sampler=None):
        self._columns = dataset_columns(dataset)
        super(ArrayIterator, self).__init__(
            dataset, batch_size, repeat=repeat, shuffle=shuffle,
            order_sampler=order_sampler)

    def __next__(self):
        if self._columns is None:
            return super(ArrayIterator, self).__next__()
        self._previous_epoch_detail = self.epoch_detail
        self._state, indices = _statemachine.iterator_statemachine(
            self._state, self.batch_size, self.repeat, self.order_sampler,
            len(self.dataset))
        if indices is None:
            raise StopIteration
        columns, index = self._columns
        indices = numpy.asarray(indices)
        if index is not None:
            indices = index[indices]
        return ArrayBatch(tuple(c[indices] for c in columns))

    next = __next__


@chainer.dataset.converter()
def concat_batch(batch, device=None, padding=None):
    """Converter for :class:`ArrayIterator`: the columns of an
    :class:`ArrayBatch` sent to ``device``; anything else (or ``padding``)
    through :func:`~chainer.dataset.concat_examples`."""
    if isinstance(batch, ArrayBatch) and padding is None:
        if device is None:  # as concat_examples: leave the arrays where
            return batch.columns  # they are
        return tuple(device.send(c) for c in batch.columns)
    return chainer.dataset.concat_examples(batch, device, padding)

import io

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer.dataset import concat_examples

from qnn.iterators.array_iterator import ArrayBatch
from qnn.iterators.array_iterator import ArrayIterator
from qnn.iterators.array_iterator import concat_batch
from qnn.iterators.array_iterator import dataset_columns

CPU = chainer.get_device('@numpy')


def tuple_dataset(n=23):
    rng = numpy.random.default_rng(0)
    return chainer.datasets.TupleDataset(
        rng.normal(size=(n, 3, 2)).astype(numpy.float32),
        rng.integers(0, 10, n).astype(numpy.int32))


def datasets():
    base = tuple_dataset()
    first, second = chainer.datasets.split_dataset(base, 15)
    _, shuffled = chainer.datasets.split_dataset_random(base, 7, seed=1)
    nested, _ = chainer.datasets.split_dataset(shuffled, 9)
    return {'tuple': base, 'first': first, 'second': second,
            'shuffled': shuffled, 'nested': nested}


def batches(iterator, converter, steps):
    out = []
    for _ in range(steps):
        arrays = converter(iterator.next(), CPU)
        out.append((arrays, iterator.epoch, iterator.is_new_epoch,
                    iterator.epoch_detail, iterator.previous_epoch_detail))
    return out


@pytest.mark.parametrize('name', sorted(datasets()))
@pytest.mark.parametrize('shuffle', [True, False])
@pytest.mark.parametrize('batch_size', [1, 4, 7])
def test_same_batches_and_epochs_as_serial_iterator(name, shuffle,
                                                    batch_size):
    dataset = datasets()[name]
    assert dataset_columns(dataset) is not None
    steps = 3 * len(dataset) // batch_size + 2  # several epochs
    numpy.random.seed(5)
    expected = batches(chainer.iterators.SerialIterator(
        dataset, batch_size, shuffle=shuffle), concat_examples, steps)
    numpy.random.seed(5)
    got = batches(ArrayIterator(dataset, batch_size, shuffle=shuffle),
                  concat_batch, steps)
    for (arrays, *state), (expected_arrays, *expected_state) in zip(
            got, expected):
        assert state == expected_state
        for a, b in zip(arrays, expected_arrays):
            assert a.dtype == b.dtype and a.shape == b.shape
            numpy.testing.assert_array_equal(a, b)


def test_one_pass_without_repeat():
    dataset = datasets()['nested']
    got = list(ArrayIterator(dataset, 4, repeat=False, shuffle=False))
    assert [len(b) for b in got] == [4, 4, 1]
    x = numpy.concatenate([b.columns[0] for b in got])
    numpy.testing.assert_array_equal(
        x, concat_examples([dataset[i] for i in range(len(dataset))])[0])


def test_batch_reads_as_list_of_examples():
    # a converter that knows nothing of ArrayBatch still gets the arrays
    batch = ArrayIterator(tuple_dataset(), 5, shuffle=False).next()
    assert isinstance(batch, ArrayBatch) and len(batch) == 5
    x, t = concat_examples(batch)
    numpy.testing.assert_array_equal(x, batch.columns[0])
    assert concat_batch(batch) is batch.columns  # no device: no copy
    numpy.testing.assert_array_equal(t, batch.columns[1])
    assert [e[1] for e in batch] == list(batch.columns[1])


def test_other_datasets_iterate_as_serial_iterator():
    dataset = [(numpy.full(2, i, numpy.float32), i) for i in range(10)]
    assert dataset_columns(dataset) is None
    iterator = ArrayIterator(dataset, 3, shuffle=False)
    batch = iterator.next()
    assert batch == dataset[:3]
    x, t = concat_batch(batch, CPU)
    numpy.testing.assert_array_equal(t, [0, 1, 2])


def test_snapshot_interchangeable_with_serial_iterator():
    dataset = tuple_dataset()
    numpy.random.seed(2)
    serial = chainer.iterators.SerialIterator(dataset, 4)
    for _ in range(8):  # into the second epoch
        serial.next()
    buf = io.BytesIO()
    chainer.serializers.save_npz(buf, serial)
    buf.seek(0)
    resumed = ArrayIterator(dataset, 4)
    chainer.serializers.load_npz(buf, resumed)
    assert (resumed.epoch, resumed.current_position) == (1, 9)
    numpy.random.seed(3)
    expected = [concat_examples(serial.next()) for _ in range(6)]
    numpy.random.seed(3)
    got = [concat_batch(resumed.next(), CPU) for _ in range(6)]
    for a, b in zip(got, expected):
        numpy.testing.assert_array_equal(a[0], b[0])

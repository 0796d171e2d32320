"""The data of a run (qnn.training.splits): validation images held out of
training, the pixel range, sizes."""
import numpy
import pytest

from qnn.datasets import mnist
from qnn.iterators import array_iterator
from qnn.training import options as train_options
from qnn.training import splits
import train_mnist

from helpers import one_error_line


def test_validation_images_are_the_last_and_not_trained_on():
    args = train_options.parse_args(['--validation', '500'])
    train, validation, test = splits.load_splits(args)
    full, _ = mnist.get_mnist()
    assert len(train) == len(full) - 500 and len(validation) == 500
    numpy.testing.assert_array_equal(validation[0][0], full[-500][0])
    numpy.testing.assert_array_equal(train[len(train) - 1][0],
                                     full[len(full) - 501][0])


@pytest.mark.parametrize('options, low', [
    ([], 0.0), (['--recipe', 'binarynet-theano'], -1.0),
    (['--recipe', 'binarynet-theano', '--input-range', 'unit'], 0.0),
    (['--input-range', 'symmetric'], -1.0)])
def test_input_range_reaches_the_data(options, low):
    args = train_options.parse_args(options + ['--validation', '500'])
    for dataset in splits.load_splits(args):
        columns, index = array_iterator.dataset_columns(dataset)
        x = columns[0] if index is None else columns[0][index]
        assert (x.min(), x.max()) == (low, 1.0)


def test_validation_larger_than_the_training_set(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--validation', '60000', '--out',
                          str(tmp_path / 'r')])
    assert e.value.code == 2
    assert '--validation 60000 leaves no training image' in \
        one_error_line(capsys)

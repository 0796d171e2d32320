import shutil

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)

from qnn import datasets
from qnn.datasets import cifar10
from qnn.datasets import fashion_mnist
from qnn.datasets import mnist as mnist_data
import train_mnist

from helpers import ROWS, SMALL, one_error_line, run_script, write_batches


def test_info():
    assert datasets.NAMES == ('mnist', 'fashion-mnist', 'cifar10')
    mnist = datasets.get_info('mnist')
    assert (mnist.in_channels, mnist.size, mnist.in_size,
            mnist.n_classes) == (1, 28, 784, 10)
    assert datasets.get_info('fashion-mnist')[2:] == (
        (1, 28, 28), 10, 60000, 10000)
    cifar = datasets.get_info('cifar10')
    assert (cifar.in_channels, cifar.size, cifar.in_size, cifar.n_classes,
            cifar.n_train, cifar.n_test) == (3, 32, 3072, 10, 50000, 10000)
    with pytest.raises(ValueError) as e:
        datasets.get_info('cifar100')
    assert str(e.value) == ("unknown dataset 'cifar100': one of mnist, "
                            'fashion-mnist, cifar10')
    assert datasets.DatasetError is mnist_data.MnistDataError


def _check(name, train, test, ndim):
    info = datasets.get_info(name)
    shape = (info.in_size,) if ndim == 1 else info.shape
    x, t = train._datasets
    assert x.shape == (len(train),) + shape and x.dtype == numpy.float32
    assert t.dtype == numpy.int32 and 0 <= t.min() and t.max() < 10
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert test[0][0].shape == shape


@pytest.mark.parametrize('ndim', [1, 3])
def test_mnist(ndim):
    train, test = datasets.get_dataset('mnist', ndim=ndim)
    _check('mnist', train, test, ndim)
    assert len(train) == 60000 and len(test) == 10000


def test_fashion_mnist():
    if not fashion_mnist.available():
        pytest.skip('Fashion-MNIST is not in {} (make fashion-mnist)'.format(
            fashion_mnist.DEBIAN_DIR))
    train, test = datasets.get_dataset('fashion-mnist', ndim=3)
    _check('fashion-mnist', train, test, 3)
    assert len(train) == 60000 and len(test) == 10000


@pytest.mark.parametrize('ndim', [1, 3])
def test_cifar10(monkeypatch, tmp_path, ndim):
    write_batches(tmp_path / cifar10.SUBDIR)
    # small files: get_dataset takes the real row count, so lower it
    monkeypatch.setattr(cifar10, 'ROWS_PER_BATCH', ROWS)
    train, test = datasets.get_dataset('cifar10', data_dir=str(tmp_path),
                                       ndim=ndim)
    _check('cifar10', train, test, ndim)
    assert len(train) == 5 * ROWS and len(test) == ROWS


def test_errors_are_dataset_errors(tmp_path):
    for name in datasets.NAMES:
        with pytest.raises(datasets.DatasetError) as e:
            datasets.get_dataset(name, data_dir=str(tmp_path))
        message = str(e.value)
        assert '\n' not in message and str(tmp_path) in message
    with pytest.raises(ValueError):
        datasets.get_dataset('mnist', ndim=2 + 2)


@pytest.mark.parametrize('name', ['unit', 'symmetric'])
def test_input_ranges(name):
    unit_train, unit_test = datasets.get_dataset('mnist')
    pixels = datasets.INPUT_RANGES[name]
    train, test = datasets.get_dataset('mnist', **pixels)
    for unit, shifted in ((unit_train, train), (unit_test, test)):
        x, t = shifted._datasets
        # p * scale / 255 + shift, from the [0, 1] images p / 255
        numpy.testing.assert_allclose(
            x, unit._datasets[0] * pixels['scale'] + pixels['shift'],
            rtol=0, atol=1e-6)
        assert x.dtype == numpy.float32
        assert (x.min(), x.max()) == (pixels['shift'],
                                      pixels['shift'] + pixels['scale'])
        numpy.testing.assert_array_equal(t, unit._datasets[1])
    assert datasets.INPUT_RANGES['symmetric'] == {'scale': 2., 'shift': -1.}


def test_uses_the_module_functions(monkeypatch):
    # a test that replaces mnist_data.get_mnist replaces what get_dataset
    # calls (tests/test_train_mnist.py and mpi_worker.py do that)
    monkeypatch.setattr(mnist_data, 'get_mnist', lambda **kwargs: kwargs)
    assert datasets.get_dataset('mnist', data_dir='d', ndim=3) == dict(
        ndim=3, scale=1., dtype=None, label_dtype=numpy.int32, data_dir='d')


def test_missing_data_dir_is_one_line(tmp_path):
    proc = run_script('--data-dir', str(tmp_path / 'nowhere'), '--epoch',
                      '1', '--out', str(tmp_path / 'result'))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert 'train-images-idx3-ubyte' in lines[0]
    assert str(tmp_path / 'nowhere') in lines[0]
    assert not (tmp_path / 'result').exists()


def test_corrupted_data_file_is_one_line(tmp_path, capsys):
    data = tmp_path / 'mnist'
    shutil.copytree(mnist_data.EMBEDDED_DIR, str(data))
    labels = data / 't10k-labels-idx1-ubyte.gz'
    content = bytearray(labels.read_bytes())
    content[len(content) // 2] ^= 0xff
    labels.write_bytes(bytes(content))
    out = tmp_path / 'result'
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--data-dir', str(data), '--out', str(out)] +
                         SMALL)
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert str(labels) in err or 't10k-labels-idx1-ubyte' in err
    assert not out.exists()


def test_cifar10_without_data_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--dataset', 'cifar10', '--data-dir',
                          str(tmp_path), '--out', str(tmp_path / 'r')])
    assert e.value.code == 1
    err = one_error_line(capsys)
    assert 'cifar-10' in err.lower() and str(tmp_path) in err
    assert not (tmp_path / 'r').exists()

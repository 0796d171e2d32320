import gzip
import os
import shutil
import struct

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)

from qnn.datasets import fashion_mnist
from qnn.datasets import files
from qnn.datasets import mnist

NAMES = [name for name, _ in fashion_mnist.FILES]
DEBIAN_DIR = fashion_mnist.DEBIAN_DIR


def _debian_files():
    """Skips the test when Debian's files are absent, unless the
    environment says they must be there (QNN_REQUIRE_FASHION_MNIST=1, for
    CI after `make fashion-mnist`): then it fails."""
    if fashion_mnist.available():
        return DEBIAN_DIR
    reason = ('Fashion-MNIST is not in {} (apt-get install {}, or make '
              'fashion-mnist)'.format(DEBIAN_DIR,
                                      fashion_mnist.DEBIAN_PACKAGE))
    if os.environ.get('QNN_REQUIRE_FASHION_MNIST') == '1':
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def data_copy(tmp_path):
    directory = _debian_files()
    copy = tmp_path / 'fashion'
    copy.mkdir()
    for name in NAMES:
        shutil.copy(os.path.join(directory, name + '.gz'), str(copy))
    return copy


def one_line(error):
    message = str(error.value)
    assert '\n' not in message
    return message


def test_debian_files_are_fashion_mnist():
    directory = _debian_files()
    sizes = {'train': 60000, 't10k': 10000}
    for name in NAMES:
        # the header and the length agree with Fashion-MNIST's description
        with gzip.open(os.path.join(directory, name + '.gz')) as f:
            content = f.read()
        prefix, kind = name.split('-')[:2]
        if kind == 'images':
            assert struct.unpack('>IIII', content[:16]) == (
                0x803, sizes[prefix], 28, 28)
            assert len(content) == 16 + sizes[prefix] * 28 * 28
        else:
            assert struct.unpack('>II', content[:8]) == (0x801,
                                                         sizes[prefix])
            assert len(content) == 8 + sizes[prefix]
    raw = fashion_mnist.load_raw()  # and the hashes are those expected
    images, labels = raw['train']
    assert images.shape == (60000, 784) and labels.shape == (60000,)
    # Fashion-MNIST has the same number of images of each class
    assert list(numpy.bincount(labels)) == [6000] * 10
    assert list(numpy.bincount(raw['test'][1])) == [1000] * 10
    assert raw['test'][0].shape == (10000, 784)
    # not MNIST by another name
    assert not numpy.array_equal(labels[:100],
                                 mnist.load_raw()['train'][1][:100])


def test_get_fashion_mnist_like_get_mnist():
    _debian_files()
    train, test = fashion_mnist.get_fashion_mnist(ndim=3)
    x, t = train._datasets
    assert x.shape == (60000, 1, 28, 28) and x.dtype == numpy.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert t.dtype == numpy.int32 and len(test) == 10000
    with pytest.raises(ValueError):
        fashion_mnist.get_fashion_mnist(ndim=4)


def test_uncompressed_copy_in_data_dir(data_copy):
    gz = data_copy / 't10k-labels-idx1-ubyte.gz'
    with gzip.open(str(gz)) as f:
        (data_copy / 't10k-labels-idx1-ubyte').write_bytes(f.read())
    gz.unlink()
    raw = fashion_mnist.load_raw(str(data_copy))
    assert raw['test'][1].shape == (10000,)


def test_corrupted_file_is_named(data_copy):
    path = data_copy / 'train-labels-idx1-ubyte.gz'
    with gzip.open(str(path)) as f:
        content = bytearray(f.read())
    content[500] = (content[500] + 1) % 10  # one label changed
    path.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(files.DatasetError) as e:
        fashion_mnist.load_raw(str(data_copy))
    message = one_line(e)
    assert message.startswith(str(path) + ': content is not Fashion-MNIST '
                              'train-labels-idx1-ubyte')
    assert 'replace it with the original Fashion-MNIST file' in message


def test_truncated_gzip_is_named(data_copy):
    path = data_copy / 't10k-images-idx3-ubyte.gz'
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(files.DatasetError) as e:
        fashion_mnist.load_raw(str(data_copy))
    assert one_line(e).startswith(str(path) + ': cannot be read')


def test_corrupted_debian_file_says_reinstall(monkeypatch, data_copy):
    monkeypatch.setattr(fashion_mnist, 'DEBIAN_DIR', str(data_copy))
    (data_copy / 't10k-labels-idx1-ubyte.gz').write_bytes(b'not gzip')
    with pytest.raises(files.DatasetError) as e:
        fashion_mnist.load_raw()
    assert one_line(e).endswith(
        'apt-get install --reinstall dataset-fashion-mnist')


def test_mnist_is_not_fashion_mnist(tmp_path):
    # foreign files of the right names and format: needs no Debian files
    for name in NAMES:
        shutil.copy(os.path.join(mnist.EMBEDDED_DIR, name + '.gz'),
                    str(tmp_path))
    with pytest.raises(files.DatasetError) as e:
        fashion_mnist.load_raw(str(tmp_path))
    message = one_line(e)
    assert message.startswith(
        str(tmp_path / 'train-images-idx3-ubyte.gz') +
        ': content is not Fashion-MNIST train-images-idx3-ubyte')
    assert mnist.SHA256['train-images-idx3-ubyte'] in message


def test_missing_file_in_data_dir(tmp_path):
    with pytest.raises(files.DatasetError) as e:
        fashion_mnist.load_raw(str(tmp_path))
    message = one_line(e)
    assert message.startswith(str(tmp_path) + ': neither '
                              'train-images-idx3-ubyte.gz nor')
    assert 'apt-get install dataset-fashion-mnist' in message


def test_not_installed_says_how(monkeypatch, tmp_path):
    monkeypatch.setattr(fashion_mnist, 'DEBIAN_DIR',
                        str(tmp_path / 'absent'))
    assert not fashion_mnist.available()
    with pytest.raises(files.DatasetError) as e:
        fashion_mnist.get_fashion_mnist()
    message = one_line(e)
    assert message.startswith(str(tmp_path / 'absent') + ': no such '
                              'directory, Fashion-MNIST is not installed')
    for fix in ('apt-get install dataset-fashion-mnist',
                'make fashion-mnist', '--data-dir DIR'):
        assert fix in message


def test_error_message_is_forced_to_one_line():
    error = files.DatasetError('a: cannot be read (x\ny); fix')
    assert str(error) == 'a: cannot be read (x y); fix'
    assert mnist.MnistDataError is files.DatasetError

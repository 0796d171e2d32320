import functools
import gzip
import http.server
import os
import shutil
import threading

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

from qnn.datasets import mnist as mnist_data

NAMES = [name for name, _ in mnist_data.FILES]
SHIPPED_DIR = mnist_data.EMBEDDED_DIR


@pytest.fixture(scope='module')
def mnist():
    return mnist_data.get_mnist()


@pytest.fixture
def data_copy(tmp_path):
    for name in NAMES:
        shutil.copy(os.path.join(SHIPPED_DIR, name + '.gz'),
                    str(tmp_path))
    return tmp_path


def test_shipped_copy_is_mnist(mnist):
    train, test = mnist
    assert len(train) == 60000 and len(test) == 10000
    x, t = train._datasets
    assert x.shape == (60000, 784) and x.dtype == numpy.float32
    assert t.dtype == numpy.int32
    assert x.min() == 0.0 and x.max() == 1.0
    # facts from shared/data/mnist/README.md
    assert list(t[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    xt, tt = test._datasets
    assert list(tt[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert list(numpy.bincount(tt)) == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_options_like_chainer_get_mnist(data_copy):
    train, test = mnist_data.get_mnist(
        withlabel=False, ndim=3, scale=255., dtype=numpy.float64,
        data_dir=str(data_copy))
    assert train.shape == (60000, 1, 28, 28) and test.shape[0] == 10000
    assert train.dtype == numpy.float64 and train.max() == 255.0
    with pytest.raises(ValueError):
        mnist_data.get_mnist(ndim=4, data_dir=str(data_copy))


def test_uncompressed_files_accepted(data_copy):
    gz = data_copy / 't10k-labels-idx1-ubyte.gz'
    with gzip.open(str(gz)) as f:
        (data_copy / 't10k-labels-idx1-ubyte').write_bytes(f.read())
    gz.unlink()
    raw = mnist_data.load_raw(str(data_copy))
    assert raw['test'][1].shape == (10000,)


def test_corrupted_file_is_named(data_copy):
    path = data_copy / 'train-labels-idx1-ubyte.gz'
    with gzip.open(str(path)) as f:
        content = bytearray(f.read())
    content[1000] = (content[1000] + 1) % 10  # one label changed
    with gzip.open(str(path), 'wb') as f:
        f.write(bytes(content))
    with pytest.raises(mnist_data.MnistDataError) as e:
        mnist_data.load_raw(str(data_copy))
    message = str(e.value)
    assert str(path) in message and 'not MNIST' in message
    assert 'replace it with the original MNIST file' in message


def test_truncated_gzip_is_named(data_copy):
    path = data_copy / 't10k-images-idx3-ubyte.gz'
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(mnist_data.MnistDataError) as e:
        mnist_data.load_raw(str(data_copy))
    assert str(path) in str(e.value) and 'cannot be read' in str(e.value)


def test_truncated_uncompressed_is_named(data_copy):
    gz = data_copy / 't10k-labels-idx1-ubyte.gz'
    with gzip.open(str(gz)) as f:
        (data_copy / 't10k-labels-idx1-ubyte').write_bytes(f.read()[:-100])
    gz.unlink()
    with pytest.raises(mnist_data.MnistDataError) as e:
        mnist_data.load_raw(str(data_copy))
    assert 't10k-labels-idx1-ubyte' in str(e.value)
    assert 'not MNIST' in str(e.value)


def test_missing_file_in_data_dir(data_copy):
    (data_copy / 'train-images-idx3-ubyte.gz').unlink()
    with pytest.raises(mnist_data.MnistDataError) as e:
        mnist_data.load_raw(str(data_copy))
    message = str(e.value)
    assert 'train-images-idx3-ubyte' in message and str(data_copy) in message


def test_shipped_copy_fix_mentions_git(monkeypatch, data_copy):
    # a corrupted file in the shipped directory says how to restore it
    monkeypatch.setattr(mnist_data, 'EMBEDDED_DIR', str(data_copy))
    (data_copy / 'train-images-idx3-ubyte.gz').write_bytes(
        gzip.compress(b'not mnist'))
    with pytest.raises(mnist_data.MnistDataError) as e:
        mnist_data.load_raw()
    assert 'git checkout -- data/mnist' in str(e.value)


class _Server(object):
    """Serves a directory on the loopback interface."""

    def __init__(self, directory):
        handler = functools.partial(
            _QuietHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                                     handler)
        self.url = 'http://127.0.0.1:{}/'.format(self.httpd.server_port)
        self.thread = threading.Thread(target=self.httpd.serve_forever)
        self.thread.daemon = True

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

    def log_message(self, *args):
        pass


@pytest.fixture
def no_local_copy(monkeypatch, tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    monkeypatch.setattr(mnist_data, 'EMBEDDED_DIR', str(empty))
    root = tmp_path / 'dataset_root'
    old_root = chainer.dataset.get_dataset_root()
    chainer.dataset.set_dataset_root(str(root))
    yield root / 'qnn' / 'mnist'
    chainer.dataset.set_dataset_root(old_root)


def test_download_from_mirror_into_cache(no_local_copy, data_copy,
                                         tmp_path):
    bad = tmp_path / 'bad_mirror'
    bad.mkdir()
    for name in NAMES:  # a mirror serving the wrong bytes is skipped
        (bad / (name + '.gz')).write_bytes(gzip.compress(b'garbage'))
    with _Server(bad) as bad_server, _Server(data_copy) as good_server:
        mirrors = ('http://127.0.0.1:9/', bad_server.url, good_server.url)
        raw = mnist_data.load_raw(mirrors=mirrors, timeout=5)
    assert raw['train'][0].shape == (60000, 784)
    assert sorted(os.listdir(str(no_local_copy))) == sorted(
        name + '.gz' for name in NAMES)
    # the cached copy is used next time, with no mirror at all
    raw = mnist_data.load_raw(mirrors=(), timeout=5)
    assert raw['test'][1][0] == 7


def test_download_failure_names_file_and_fix(no_local_copy, tmp_path):
    bad = tmp_path / 'bad_mirror'
    bad.mkdir()
    (bad / 'train-images-idx3-ubyte.gz').write_bytes(gzip.compress(b'x'))
    with _Server(bad) as server:
        with pytest.raises(mnist_data.MnistDataError) as e:
            mnist_data.load_raw(mirrors=(server.url,), timeout=5)
    message = str(e.value)
    assert message.startswith('train-images-idx3-ubyte.gz: not found')
    assert 'git checkout -- data/mnist' in message
    assert not no_local_copy.exists() or not os.listdir(str(no_local_copy))

"""CIFAR-10 from small batches written here in the official format.

The official batches were pickled by Python 2's cPickle, protocol 2: byte
strings (Python 2's str) as BINSTRING opcodes, arrays through
numpy.core.multiarray._reconstruct. Python 3's pickle writes bytes through
_codecs.encode instead, so :class:`Python2Pickler` writes them as Python 2
did; :func:`test_writer_writes_the_official_format` checks the result.
"""
import os
import pickle
import pickletools

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)

from qnn.datasets import cifar10
from qnn.datasets import files

from helpers import ROWS, batch, python2_pickle, write_batches


@pytest.fixture
def batches(tmp_path):
    directory = tmp_path / cifar10.SUBDIR
    return directory, write_batches(directory)


def load(directory, rows=ROWS):
    return cifar10.load_raw(str(directory), rows_per_batch=rows)


def error_of(directory, rows=ROWS):
    with pytest.raises(files.DatasetError) as e:
        load(directory, rows)
    message = str(e.value)
    assert '\n' not in message
    return message


def test_writer_writes_the_official_format():
    content = python2_pickle(batch(numpy.zeros((2, 3072), numpy.uint8),
                                   [0, 1], 'b'))
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(content)]
    assert ops[0] == ('PROTO', 2)
    assert {arg for name, arg in ops if name == 'GLOBAL'} == {
        'numpy.core.multiarray _reconstruct', 'numpy ndarray', 'numpy dtype'}
    assert not [name for name, _ in ops if 'UNICODE' in name]
    # what Python 3 reads of it, unrestricted, as the CIFAR-10 page says
    obj = pickle.loads(content, encoding='bytes')
    assert sorted(obj) == [b'batch_label', b'data', b'filenames', b'labels']
    assert obj[b'data'].dtype == numpy.uint8
    assert obj[b'data'].shape == (2, 3072)


def test_restricted_unpickler_reads_what_pickle_reads(batches):
    directory, _ = batches
    path = str(directory / 'data_batch_3')
    with open(path, 'rb') as f:
        expected = pickle.load(f, encoding='bytes')
    got = cifar10._unpickle(path)
    assert sorted(got) == sorted(expected)
    numpy.testing.assert_array_equal(got[b'data'], expected[b'data'])
    assert got[b'labels'] == expected[b'labels']


@pytest.mark.parametrize('where', ['batches', 'parent'])
def test_get_cifar10(batches, where):
    directory, written = batches
    data_dir = directory if where == 'batches' else directory.parent
    train, test = cifar10.get_cifar10(data_dir=str(data_dir),
                                      scale=255., rows_per_batch=ROWS)
    assert len(train) == 5 * ROWS and len(test) == ROWS
    x, t = train._datasets
    assert x.shape == (5 * ROWS, 3, 32, 32) and x.dtype == numpy.float32
    assert t.dtype == numpy.int32
    images, labels = written['data_batch_2']
    # row r of data_batch_2 is image ROWS + r; pixel (c, y, x) of a row is
    # value c * 1024 + y * 32 + x: red plane, then green, then blue
    r, c, i, j = 3, 2, 5, 7
    assert x[ROWS + r, c, i, j] == images[r, c * 1024 + i * 32 + j]
    assert list(t[ROWS:2 * ROWS]) == labels
    xt, tt = test._datasets
    numpy.testing.assert_array_equal(xt.reshape(ROWS, -1),
                                     written['test_batch'][0])


def test_flat_images_and_scale(batches):
    directory, written = batches
    train, _ = cifar10.get_cifar10(
        withlabel=False, ndim=1, data_dir=str(directory),
        rows_per_batch=ROWS)
    assert train.shape == (5 * ROWS, 3072)
    assert train.min() >= 0.0 and train.max() <= 1.0
    numpy.testing.assert_allclose(
        train[:ROWS] * 255., written['data_batch_1'][0], rtol=1e-6)
    with pytest.raises(ValueError):  # three channels have no 2-d form
        cifar10.get_cifar10(ndim=2, data_dir=str(directory),
                            rows_per_batch=ROWS)


def test_real_row_count_is_the_default(batches):
    directory, _ = batches
    message = error_of(directory, rows=None)
    assert message.startswith(str(directory / 'data_batch_1') +
                              ": not a CIFAR-10 batch (b'data' has 10 rows, "
                              'not 10000)')


class _Mkdir(object):
    """Pickles as a call of os.mkdir(path): code a pickle would run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_forbidden_global_is_refused_without_running_it(batches, tmp_path):
    directory, written = batches
    marker = tmp_path / 'ran'
    images, labels = written['data_batch_4']
    content = python2_pickle(
        {b'data': images, b'labels': labels, b'x': _Mkdir(str(marker))})
    # the file would run os.mkdir when unpickled as usual
    pickle.loads(content, encoding='bytes')
    assert marker.is_dir()
    marker.rmdir()
    path = directory / 'data_batch_4'
    path.write_bytes(content)
    message = error_of(directory)
    assert message.startswith('{}: refused to unpickle it: it refers to '
                              '{}.mkdir,'.format(path, os.mkdir.__module__))
    assert not marker.exists()


def test_python3_pickle_is_refused(batches):
    # Python 3 writes bytes, in protocol 2, as calls of _codecs.encode: a
    # global the official files do not use
    directory, written = batches
    images, labels = written['test_batch']
    path = directory / 'test_batch'
    path.write_bytes(pickle.dumps(batch(images, labels, 't'), protocol=2))
    assert 'refers to _codecs.encode' in error_of(directory)


def _rewrite(directory, name, change):
    path = directory / name
    obj = pickle.loads(path.read_bytes(), encoding='bytes')
    path.write_bytes(python2_pickle(change(obj)))
    return path


def _set(key, value):
    def change(obj):
        obj[key] = value
        return obj
    return change


def _drop(key):
    def change(obj):
        del obj[key]
        return obj
    return change


@pytest.mark.parametrize('change,reason', [
    (lambda obj: [obj], 'it holds a list where a batch is a dict'),
    (_drop(b'labels'), "no b'labels' key; keys: b'batch_label', b'data', "
                       "b'filenames'"),
    (_set(b'data', numpy.zeros((ROWS, 3072), numpy.float32)),
     "b'data' is float32 of shape (10, 3072), not uint8 rows of 3072 pixels"),
    (_set(b'data', numpy.zeros((ROWS, 3073), numpy.uint8)),
     "b'data' is uint8 of shape (10, 3073), not uint8 rows of 3072 pixels"),
    (_set(b'data', numpy.zeros((ROWS + 1, 3072), numpy.uint8)),
     "b'data' has 11 rows, not 10"),
    (_set(b'data', [0] * 3072), "b'data' is a list, not a NumPy array"),
    (_set(b'labels', list(range(9))), '9 labels for 10 images'),
    (_set(b'labels', numpy.arange(10)), "b'labels' is not a list of ints"),
    (_set(b'labels', list(range(1, 11))),
     'labels range from 1 to 10, not within 0..9'),
])
def test_foreign_structure_is_named(batches, change, reason):
    directory, _ = batches
    path = _rewrite(directory, 'data_batch_5', change)
    assert error_of(directory) == (
        '{}: not a CIFAR-10 batch ({}); replace it with the file of that '
        'name from the official cifar-10-python.tar.gz'.format(path, reason))


@pytest.mark.parametrize('damage,reason', [
    (lambda data: data[:len(data) // 2], 'unpickling failed: '),
    (lambda data: b'', 'unpickling failed: EOFError'),
    (lambda data: b'PK\x03\x04' + data, 'unpickling failed: '),
    (lambda data: data + b'\0', '1 bytes after the end of the pickle'),
])
def test_damaged_file_is_named(batches, damage, reason):
    directory, _ = batches
    path = directory / 'test_batch'
    path.write_bytes(damage(path.read_bytes()))
    message = error_of(directory)
    assert message.startswith('{}: not a CIFAR-10 batch ('.format(path))
    assert reason in message


def test_copied_batch_is_named(batches):
    directory, _ = batches
    (directory / 'data_batch_3').write_bytes(
        (directory / 'data_batch_1').read_bytes())
    assert error_of(directory).startswith(
        '{}: the same images as data_batch_1;'.format(
            directory / 'data_batch_3'))


def test_unbalanced_classes_are_named(batches):
    directory, _ = batches
    _rewrite(directory, 'test_batch', _set(b'labels', [0] * 5 + [1] * 5))
    assert error_of(directory).startswith(
        '{}: not CIFAR-10 (the test_batch hold [5, 5, 0, 0, 0, 0, 0, 0, 0, '
        '0] images per class where CIFAR-10 has the same number of each, '
        '1);'.format(directory))


def _says_where_to_get_it(message):
    assert 'University of Toronto' in message
    assert 'https://www.cs.toronto.edu/~kriz/cifar.html' in message
    assert '"CIFAR-10 python version"' in message
    assert '--data-dir DIR' in message


def test_no_data_dir():
    with pytest.raises(files.DatasetError) as e:
        cifar10.get_cifar10()
    assert str(e.value).startswith('CIFAR-10: no data directory given')
    _says_where_to_get_it(str(e.value))


def test_missing_directory(tmp_path):
    message = error_of(tmp_path / 'nowhere')
    assert message.startswith('{}: no such directory'.format(
        tmp_path / 'nowhere'))
    _says_where_to_get_it(message)


def test_empty_directory(tmp_path):
    message = error_of(tmp_path)
    assert message.startswith('{}: no CIFAR-10 batches there'.format(
        tmp_path))
    _says_where_to_get_it(message)


def test_missing_file(batches):
    directory, _ = batches
    (directory / 'test_batch').unlink()
    (directory / 'data_batch_2').unlink()
    message = error_of(directory.parent)
    assert message.startswith('{}: data_batch_2, test_batch missing'.format(
        directory))
    _says_where_to_get_it(message)


def test_packed_archive_says_unpack(tmp_path):
    (tmp_path / 'cifar-10-python.tar.gz').write_bytes(b'')
    message = error_of(tmp_path)
    assert message.endswith('unpack it with `tar xzf {} -C {}`'.format(
        tmp_path / 'cifar-10-python.tar.gz', tmp_path))

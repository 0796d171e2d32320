import os

import pytest

from qnn.utils import input_files


@pytest.mark.parametrize('kind', ['fifo', 'directory', 'device'])
def test_only_a_regular_file_is_opened(tmp_path, kind):
    path = str(tmp_path / 'x')
    if kind == 'fifo':
        os.mkfifo(path)  # opened for reading, it would wait for a writer
    elif kind == 'directory':
        os.mkdir(path)
    else:
        path = '/dev/zero'
    with pytest.raises(input_files.NotRegularFile) as e:
        input_files.open_regular(path)
    assert e.value.strerror.endswith('not a regular file')
    assert e.value.filename == path


def test_a_regular_file_reads_as_usual(tmp_path):
    path = tmp_path / 'x'
    path.write_bytes(b'data')
    with input_files.open_regular(str(path)) as f:
        assert f.read() == b'data'
        assert input_files.size_of(f) == 4


def test_read_bounded_refuses_a_larger_file_unread(tmp_path):
    path = tmp_path / 'x'
    with open(str(path), 'wb') as f:
        f.truncate(1 << 30)  # sparse: reading it would cost a gigabyte
    with pytest.raises(input_files.TooLarge) as e:
        input_files.read_bounded(str(path), 1000, 'a config.json')
    assert e.value.strerror == ('1073741824 bytes, more than the 1000 bytes '
                                'a config.json can be')
    path.write_bytes(b'{"a": [1]}')
    assert input_files.read_json(str(path), 1000) == {'a': [1]}


def test_read_json_of_deep_nesting_is_a_value_error(tmp_path):
    path = tmp_path / 'x'
    path.write_bytes(b'[' * 100000 + b']' * 100000)
    with pytest.raises(ValueError):
        input_files.read_json(str(path), 1 << 20)

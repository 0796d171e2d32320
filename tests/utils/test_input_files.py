"""Files read within bounds (qnn.utils.input_files): regular files only,
no more bytes than asked, JSON without unbounded nesting."""
import json
import os

import pytest

from qnn.utils import input_files


def test_reads_a_regular_file_within_its_bound(tmp_path):
    path = tmp_path / 'config.json'
    path.write_text(json.dumps({'unit': 30}))
    assert input_files.read_json(str(path), 100) == {'unit': 30}
    with pytest.raises(input_files.InputFileError, match='more than the 5'):
        input_files.read_bounded(str(path), 5)


@pytest.mark.parametrize('make, reason', [
    (lambda p: None, 'no such file'),
    (lambda p: os.mkdir(p), 'a directory'),
    (lambda p: os.mkfifo(p), r'not a regular file \(a FIFO\)'),
])
def test_what_is_not_a_regular_file_is_refused_at_once(tmp_path, make,
                                                       reason):
    path = str(tmp_path / 'x')
    make(path)
    with pytest.raises(input_files.InputFileError, match=reason):
        input_files.read_bounded(path, 100)


def test_devices_are_refused():
    with pytest.raises(input_files.InputFileError,
                       match='character device'):
        input_files.read_bounded('/dev/zero', 100)


@pytest.mark.parametrize('text, reason', [
    ('[' * 100000 + ']' * 100000, 'nested too deeply'),
    ('{"unit": ', 'not JSON'),
    (b'\xff\xfe', 'not JSON'),
])
def test_bad_json(tmp_path, text, reason):
    path = tmp_path / 'config.json'
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(input_files.InputFileError, match=reason):
        input_files.read_json(str(path), 1 << 20)

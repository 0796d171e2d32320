import os

import pytest

from qnn.utils import atomic_files


def test_writes_the_file(tmp_path):
    path = str(tmp_path / 'f')
    atomic_files.write_atomically(path, lambda f: f.write(b'new'))
    assert open(path, 'rb').read() == b'new'
    assert os.listdir(str(tmp_path)) == ['f']


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = str(tmp_path / 'f')
    atomic_files.write_atomically(path, lambda f: f.write(b'old'))

    def fail_half_way(f):
        f.write(b'part')
        raise OSError(28, 'No space left on device')

    with pytest.raises(OSError):
        atomic_files.write_atomically(path, fail_half_way)
    assert open(path, 'rb').read() == b'old'
    assert os.listdir(str(tmp_path)) == ['f']


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = str(tmp_path / 'f')
        atomic_files.write_atomically(path, lambda f: f.write(b'x'))
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o640

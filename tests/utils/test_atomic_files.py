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


def test_writes_the_directory(tmp_path):
    path = str(tmp_path / 'model')
    atomic_files.write_directory_atomically(path, {'a.c': b'1', 'b.h': b'2'})
    assert sorted(os.listdir(path)) == ['a.c', 'b.h']
    assert open(os.path.join(path, 'b.h'), 'rb').read() == b'2'
    assert os.listdir(str(tmp_path)) == ['model']


def test_the_directory_replaces_an_empty_one_only(tmp_path):
    path = tmp_path / 'model'
    path.mkdir()
    atomic_files.write_directory_atomically(str(path), {'a.c': b'1'})
    assert os.listdir(str(path)) == ['a.c']
    for existing in (str(path), str(tmp_path / 'file')):
        open(str(tmp_path / 'file'), 'wb').close()
        with pytest.raises(FileExistsError):
            atomic_files.write_directory_atomically(existing, {'x': b'2'})
    os.symlink(str(tmp_path / 'empty'), str(tmp_path / 'link'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileExistsError):
        atomic_files.write_directory_atomically(str(tmp_path / 'link'),
                                                {'x': b'2'})
    assert os.listdir(str(path)) == ['a.c']
    assert os.listdir(str(tmp_path / 'empty')) == []
    assert sorted(os.listdir(str(tmp_path))) == ['empty', 'file', 'link',
                                                 'model']


def test_a_failed_directory_leaves_nothing(tmp_path):
    path = str(tmp_path / 'model')
    with pytest.raises(OSError):
        # the second file cannot be created
        atomic_files.write_directory_atomically(
            path, {'a.c': b'1', 'no/such/folder': b'2'})
    assert os.listdir(str(tmp_path)) == []


def test_directory_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = str(tmp_path / 'model')
        atomic_files.write_directory_atomically(path, {'a.c': b'1'})
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o750
    assert os.stat(os.path.join(path, 'a.c')).st_mode & 0o777 == 0o640

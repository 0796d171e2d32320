import os
import stat

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


def refusal(path, **options):
    with pytest.raises(atomic_files.RefusedOutput) as e:
        atomic_files.write_atomically(str(path), lambda f: f.write(b'new'),
                                      **options)
    assert '\n' not in e.value.strerror
    return e.value.strerror


def test_a_fifo_stays_a_fifo(tmp_path):
    path = tmp_path / 'fifo'
    os.mkfifo(str(path))
    assert 'FIFO' in refusal(path)
    assert stat.S_ISFIFO(os.lstat(str(path)).st_mode)
    assert os.listdir(str(tmp_path)) == ['fifo']  # no temporary left


def test_a_link_to_a_device_is_not_followed_into_a_file(tmp_path):
    path = tmp_path / 'null'
    os.symlink('/dev/null', str(path))
    assert 'character device' in refusal(path)
    assert os.path.islink(str(path))


@pytest.mark.parametrize('name', ['directory', 'directory/'])
def test_a_directory_is_named_as_one(tmp_path, name):
    (tmp_path / 'directory').mkdir()
    assert 'directory' in refusal(str(tmp_path / name))


def test_a_missing_directory_is_named(tmp_path):
    assert 'does not exist' in refusal(tmp_path / 'none' / 'f')


def test_a_read_only_file_is_kept(tmp_path):
    path = tmp_path / 'f'
    path.write_bytes(b'old')
    os.chmod(str(path), 0o444)
    assert 'read-only (mode 0444)' in refusal(path)
    assert path.read_bytes() == b'old'


def test_an_input_is_kept_under_any_name(tmp_path):
    path = tmp_path / 'input'
    path.write_bytes(b'old')
    os.symlink('input', str(tmp_path / 'alias'))
    assert 'which this command reads' in refusal(tmp_path / 'alias',
                                                 inputs=[str(path)])
    assert path.read_bytes() == b'old'


@pytest.mark.parametrize('marker', ['config.json', '.lock'])
@pytest.mark.parametrize('name', ['config.json', 'log', 'snapshot_iter_10',
                                  'snapshot_iter_999', 'cg.dot'])
def test_a_run_directory_keeps_its_files(tmp_path, marker, name):
    (tmp_path / marker).write_bytes(b'{}')
    assert 'training run' in refusal(tmp_path / name)
    # the run itself writes them; other names are free
    atomic_files.write_atomically(str(tmp_path / name),
                                  lambda f: f.write(b'new'), run_output=True)
    atomic_files.write_atomically(str(tmp_path / (name + '.bnn')),
                                  lambda f: f.write(b'new'))


def test_the_run_files_are_those_a_run_writes():
    from qnn.training import output_lock
    from qnn.training import run_history
    from qnn.training.extensions import snapshots
    for name in (run_history.CONFIG_NAME, output_lock.LOCK_NAME,
                 output_lock.OWNER_NAME, snapshots.snapshot_name(12000)):
        assert atomic_files.RUN_FILE.match(name), name
    assert run_history.CONFIG_NAME in atomic_files.RUN_MARKERS
    assert output_lock.LOCK_NAME in atomic_files.RUN_MARKERS
    assert not atomic_files.RUN_FILE.match('snapshot_iter_10.bnn')


def test_a_fifo_put_in_place_while_writing_is_kept(tmp_path):
    path = tmp_path / 'f'

    def race(f):
        f.write(b'new')
        os.mkfifo(str(path))

    with pytest.raises(atomic_files.RefusedOutput):
        atomic_files.write_atomically(str(path), race)
    assert stat.S_ISFIFO(os.lstat(str(path)).st_mode)
    assert os.listdir(str(tmp_path)) == ['f']

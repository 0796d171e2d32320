"""Hostile files and paths handed to every command: one line, exit 1 or 2,
bounded memory, nothing replaced.

Each case makes its hostile file on the spot (:mod:`hostile_files`) and
runs ``inference.py``, ``export.py`` or ``train_mnist.py --resume`` as a
child process with its address space capped and a timeout
(:func:`helpers.run_capped`). Each must end with exit status 1 or 2
and exactly one line on stderr naming what is wrong, no traceback, a peak
resident memory under a bound (a forged size of gigabytes would exceed
it), and no file of the test's directories changed (the output it was
asked for is never written).
"""
import hashlib
import os
import shutil

import numpy
import pytest

from qnn.datasets import idx
from qnn.datasets import mnist
from qnn.packed import format as packed_format
import train_mnist

from helpers import RSS_BOUND
from helpers import assert_refused
from helpers import conv_network
from helpers import dense_network
from helpers import forge
from helpers import gzip_bomb
from helpers import header_bomb_member
from helpers import npy_header
from helpers import rewrite_npz
from helpers import run_capped
from helpers import snapshot_of_files
from helpers import special_file
from helpers import split_packed
from helpers import zeros_member

MODEL = 'updater/model:main/predictor/'
RUN_OPTIONS = ['--unit', '16', '--train-subset', '500', '--test-subset',
               '100', '--batchsize', '50', '--noplot']
# what export.py and a refused resume cost at most, resident: export.py
# peaks near 60 MB; train_mnist.py loads the data set and builds the
# trainer before it reads the snapshot, some 420 MB
EXPORT_RSS = 200 << 20
RESUME_RSS = 640 << 20


@pytest.fixture(scope='module')
def good_file(tmp_path_factory):
    """The bytes of a valid packed MLP and of a valid packed ConvNet."""
    rng = numpy.random.default_rng(0)
    return {'mlp': packed_format.encode(dense_network(rng)),
            'cnn': packed_format.encode(conv_network(rng))}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A finished 1-epoch run of 16 units: its directory."""
    out = tmp_path_factory.mktemp('run') / 'run'
    assert train_mnist.main(['--epoch', '1', '--out', str(out)] +
                            RUN_OPTIONS) == 0
    return out


def copy_run(run, tmp_path):
    """A copy of the run's directory (without its lock) to damage."""
    copy = tmp_path / 'run'
    shutil.copytree(str(run), str(copy), ignore=shutil.ignore_patterns(
        '.lock', '.lock.owner'))
    return copy


def refused(tmp_path, argv, program, *words, rss=RSS_BOUND, timeout=120):
    """Runs ``argv`` capped; asserts it is refused in one line naming
    ``words``, its peak memory under ``rss``, and that no file under
    ``tmp_path`` changed."""
    before = snapshot_of_files(tmp_path)
    result = run_capped(argv, timeout)
    assert result.status is not None, 'killed after {} s: {}'.format(
        timeout, result)
    assert_refused(result, program, *words)
    assert result.rss < rss, (result.rss, rss, result)
    assert snapshot_of_files(tmp_path) == before
    return result


def infer(tmp_path, data, *words):
    """``inference.py`` on a file of the bytes ``data``, refused."""
    path = tmp_path / 'hostile.bnn'
    path.write_bytes(data)
    return refused(tmp_path, ['inference.py', str(path), '--test-subset',
                              '10'], 'inference.py', str(path), *words)


# --- packed files: every field checked before a kernel runs ---------------

def set_in(*path, value):
    """A ``mutate`` for :func:`helpers.forge` setting the header's
    value at ``path`` (keys and list indices)."""
    def mutate(header):
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def one_pixel_input(header):
    # the reproduction: layer 0 of n_in 1, an input of shape [1, 1, 1]
    # (the checksum recomputed): the first-layer kernel wrote 784 pixels
    # into a row of 64
    header['layers'][0]['n_in'] = 1
    header['layers'][0]['arrays']['weights']['shape'] = [16, 1]
    header['input']['shape'] = [1, 1, 1]


def offsets(change):
    def mutate(header):
        arrays = header['layers'][1]['arrays']
        change(arrays, header['layers'][0]['arrays'])
    return mutate


def raw_number(*path):
    """Sets the JSON number ``1e999`` (an infinity to Python's parser) at
    ``path``."""
    return set_in(*path, value='@1e999@')


FORGED = [
    ('input of one pixel', one_pixel_input, 'one pixel', 'input.shape'),
    ('input size', set_in('input', 'size', value=1), None, 'input.size'),
    ('unknown data set', set_in('input', 'dataset', value='imagenet'),
     None, 'input.dataset'),
    ('null data set', set_in('input', 'dataset', value=None), None,
     'input.dataset'),
    ('float shape', set_in('layers', 0, 'arrays', 'weights', 'shape',
                           value=[16.0, 13]), None, 'shape'),
    ('boolean n_out', set_in('layers', 1, 'n_out', value=True), None,
     'n_out'),
    ('string n_in', set_in('layers', 0, 'n_in', value='784'), None, 'n_in'),
    ('n_in 1e999', raw_number('layers', 0, 'n_in'), None, 'n_in'),
    ('file_size 1e999', raw_number('file_size'), None,
     'file_size'),
    ('offset 1e999', raw_number('layers', 0, 'arrays', 'weights',
                                'offset'), None, 'offset'),
    ('shape 1e999', set_in('layers', 0, 'arrays', 'weights', 'shape',
                           value=['@1e999@', 13]), None, 'shape'),
    ('overlapping arrays', offsets(lambda a, b: a['weights'].update(
        offset=b['weights']['offset'])), None, 'over the array'),
    ('unaligned offset', offsets(lambda a, b: a['weights'].update(
        offset=a['weights']['offset'] + 8)), None, 'multiple of 64'),
    ('offset inside the header', offsets(lambda a, b: a['weights'].update(
        offset=64)), None, 'inside the header'),
    ('offset past the end', offsets(lambda a, b: a['weights'].update(
        offset=1 << 40)), None, 'outside the file'),
    ('unknown array', offsets(lambda a, b: a.update(
        extra={'dtype': '<u8', 'shape': [1], 'offset': 0})), None,
     'extra'),
    ('array of another dtype', offsets(lambda a, b: a['mean'].update(
        dtype='<f8')), None, 'dtype'),
    ('unknown layer key', set_in('layers', 0, 'code', value='os.system'),
     None, "'code'"),
    ('name with a line break', set_in('layers', 0, 'name', value='l1\nx'),
     None, 'name'),
    ('more classes', set_in('layers', 1, 'n_out', value=11), None,
     'classes'),
    ('nonzero gap', None, lambda body: body.__setitem__(3000, 1),
     'nonzero bytes'),
    ('padding bits', None, 'padding', 'padding bits'),
    ('NaN output parameter', None, 'nan', 'non-finite'),
]


def _patch(good, what):
    """A ``patch`` of the body: the first layer's weights as 16 rows of
    one input (all else a valid file), the first weight row's padding
    bits set, or the output layer's first mean a NaN."""
    header, _ = split_packed(good)
    if what == 'one pixel':
        at = header['layers'][0]['arrays']['weights']['offset'] + 4096
        rows = numpy.arange(16, dtype='<u8') % 2
        return lambda body: body.__setitem__(
            slice(at, at + 16 * 13 * 8),
            rows.tobytes() + bytes(16 * 12 * 8))
    if what == 'padding':
        at = header['layers'][0]['arrays']['weights']['offset'] + 4096
        return lambda body: body.__setitem__(at + 12 * 8 + 7, 0x80)
    at = header['layers'][1]['arrays']['mean']['offset'] + 4096
    return lambda body: body.__setitem__(slice(at, at + 4),
                                         numpy.float32('nan').tobytes())


@pytest.mark.parametrize('name, mutate, patch, word', FORGED,
                         ids=[case[0] for case in FORGED])
def test_forged_packed_file_is_refused(tmp_path, good_file, name, mutate,
                                       patch, word):
    good = good_file['mlp']
    if isinstance(patch, str):
        patch = _patch(good, patch)
    infer(tmp_path, forge(good, mutate, patch), word)


def test_forge_makes_readable_files(good_file):
    # the refusals above are the mutations', not forge()'s
    for kind, good in good_file.items():
        network = packed_format.decode(forge(good))
        assert [layer.kind for layer in network.layers] == [
            layer.kind for layer in packed_format.decode(good).layers]


def test_conv_flipped_values_are_zero_or_one(tmp_path, good_file):
    good = good_file['cnn']
    header, _ = split_packed(good)
    at = header['layers'][0]['arrays']['flipped']['offset'] + 4096
    infer(tmp_path, forge(good, patch=lambda body: body.__setitem__(at, 2)),
          'flipped')


def test_deeply_nested_header_is_refused_before_parsing(tmp_path):
    text = b'[' * 200000 + b']' * 200000
    body = packed_format.MAGIC + (2).to_bytes(4, 'little') + \
        len(text).to_bytes(4, 'little') + text
    body += bytes(-len(body) % 64)
    infer(tmp_path, body + hashlib.sha256(body).digest(), 'nested')


def test_header_length_beyond_the_bound(tmp_path):
    infer(tmp_path, packed_format.MAGIC + (2).to_bytes(4, 'little') +
          (2 ** 32 - 1).to_bytes(4, 'little') + bytes(64), 'header')


@pytest.mark.parametrize('magic', [False, True])
def test_sparse_file_costs_little_memory(tmp_path, magic):
    # without the magic (2 GB): refused at once; with it and a header that
    # claims the whole file (1 GB): its checksum is computed a megabyte at
    # a time
    path = tmp_path / 'hostile.bnn'
    size = (1 << 30) if magic else (2 << 30)
    with open(str(path), 'wb') as f:
        if magic:
            text = ('{"file_size": %d}' % size).encode()
            f.write(packed_format.MAGIC + (2).to_bytes(4, 'little') +
                    len(text).to_bytes(4, 'little') + text)
        f.truncate(size)
    refused(tmp_path, ['inference.py', str(path)], 'inference.py',
            'checksum' if magic else 'not a packed network', timeout=300)


@pytest.mark.parametrize('kind', ['fifo', 'device', 'directory'])
def test_special_file_as_the_packed_file(tmp_path, kind):
    path = tmp_path / 'net.bnn'
    special_file(path, kind)
    refused(tmp_path, ['inference.py', str(path)], 'inference.py',
            str(path), 'not a regular file', timeout=60)


def test_dev_zero_as_the_packed_file(tmp_path):
    refused(tmp_path, ['inference.py', '/dev/zero'], 'inference.py',
            'character device', timeout=60)


# --- outputs: never a special file, an input or a run's file --------------

def run_files(run, tmp_path):
    copy = copy_run(run, tmp_path)
    return copy, {'config.json': copy / 'config.json', 'log': copy / 'log',
                  'snapshot': copy / 'snapshot_iter_10',
                  'new snapshot name': copy / 'snapshot_iter_999'}


@pytest.mark.parametrize('kind', ['fifo', 'device', 'read-only',
                                  'directory', 'dir/', 'the input',
                                  'a data file', 'config.json', 'log'])
def test_predictions_replace_nothing(tmp_path, good_file, kind):
    network = tmp_path / 'net.bnn'
    network.write_bytes(good_file['mlp'])
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'config.json').write_text('{}')
    (tmp_path / 'run' / 'log').write_text('[]')
    data = tmp_path / 'data'
    shutil.copytree(mnist.EMBEDDED_DIR, str(data))
    output = {'the input': str(network), 'dir/': str(tmp_path) + '/',
              'a data file': str(data / 't10k-labels-idx1-ubyte.gz'),
              'config.json': str(tmp_path / 'run' / 'config.json'),
              'log': str(tmp_path / 'run' / 'log')}.get(
                  kind, str(tmp_path / 'predictions.txt'))
    if kind in ('fifo', 'device', 'read-only', 'directory'):
        special_file(output, kind)
    refused(tmp_path, ['inference.py', str(network), '--data-dir',
                       str(data), '--predictions', output], 'inference.py',
            'cannot write', timeout=60)


@pytest.mark.parametrize('kind', ['fifo', 'device', 'read-only',
                                  'directory', 'dir/', 'snapshot',
                                  'config.json', 'log', 'new snapshot name'])
def test_export_output_replaces_nothing(tmp_path, run, kind):
    copy, files = run_files(run, tmp_path)
    snapshot = str(files['snapshot'])
    if kind in files:
        output = str(files[kind])
    elif kind == 'dir/':
        output = str(tmp_path) + '/'
    else:
        output = str(tmp_path / 'out.bnn')
        special_file(output, kind)
    refused(tmp_path, ['export.py', snapshot, '-o', output], 'export.py',
            'cannot write', rss=EXPORT_RSS, timeout=60)


def test_export_of_dev_zero_says_what_it_is(tmp_path):
    result = refused(tmp_path, ['export.py', '/dev/zero', '-o',
                                str(tmp_path / 'x.bnn')], 'export.py',
                     'character device', rss=EXPORT_RSS, timeout=60)
    assert 'no such file' not in result.err


# --- snapshots: bounded, of float weights, consistent ----------------------

def export_refused(tmp_path, snapshot, *words):
    """``export.py snapshot``, refused with ``words`` (the snapshot's
    path, unless one of them is a path)."""
    if not any(os.sep in word for word in words):
        words += (str(snapshot),)
    return refused(tmp_path, ['export.py', str(snapshot), '-o',
                              str(tmp_path / 'out.bnn')], 'export.py',
                   *words, rss=EXPORT_RSS, timeout=120)


def resume_refused(tmp_path, snapshot, *words):
    out = tmp_path / 'resumed'
    result = refused(tmp_path, ['train_mnist.py', '--resume', str(snapshot),
                                '--out', str(out), '--epoch', '2'] +
                     RUN_OPTIONS, 'train_mnist.py', *words, rss=RESUME_RSS,
                     timeout=180)
    assert not out.exists()
    return result


def test_zip_bomb_member_costs_nothing(tmp_path, run):
    copy = copy_run(run, tmp_path)
    snapshot = copy / 'snapshot_iter_10'
    bomb = tmp_path / 'bomb'
    # 512 MB of float32 zeros in a member of some 500 kB, where l1/W was
    rewrite_npz(snapshot, bomb, drop=(MODEL + 'l1/W',),
                add={MODEL + 'l1/W': zeros_member((1 << 27,), 'f4')})
    os.replace(str(bomb), str(snapshot))
    assert os.path.getsize(str(snapshot)) < 4 << 20
    export_refused(tmp_path, snapshot, 'bytes')
    resume_refused(tmp_path, snapshot, 'bytes')


def test_extra_large_member_is_refused_on_resume(tmp_path, run):
    copy = copy_run(run, tmp_path)
    snapshot = copy / 'snapshot_iter_10'
    bomb = tmp_path / 'bomb'
    rewrite_npz(snapshot, bomb,
                add={'extra': zeros_member((1 << 27,), 'f4')})
    os.replace(str(bomb), str(snapshot))
    resume_refused(tmp_path, snapshot, 'extra')


def test_npy_header_bomb_costs_nothing(tmp_path, run):
    copy = copy_run(run, tmp_path)
    snapshot = copy / 'snapshot_iter_10'
    bomb = tmp_path / 'bomb'
    rewrite_npz(snapshot, bomb, drop=(MODEL + 'l1/W',), add={
        MODEL + 'l1/W': header_bomb_member(1 << 29)})
    os.replace(str(bomb), str(snapshot))
    export_refused(tmp_path, snapshot, 'header')
    resume_refused(tmp_path, snapshot, 'header')


def test_declared_size_alone_is_refused(tmp_path, run):
    # a header that claims (500000, 1000) float32 over a few bytes of data
    copy = copy_run(run, tmp_path)
    snapshot = copy / 'snapshot_iter_10'
    bomb = tmp_path / 'bomb'
    rewrite_npz(snapshot, bomb, drop=(MODEL + 'l1/W',), add={
        MODEL + 'l1/W': npy_header((500000, 1000), 'f4') + bytes(64)})
    os.replace(str(bomb), str(snapshot))
    export_refused(tmp_path, snapshot, '(500000, 1000)')
    resume_refused(tmp_path, snapshot, 'l1/W')


@pytest.mark.parametrize('dtype', ['<U2', 'complex64', 'int32', 'bool',
                                   'float16'])
def test_weights_of_another_dtype_are_refused(tmp_path, run, dtype):
    copy = copy_run(run, tmp_path)
    snapshot = copy / 'snapshot_iter_10'
    changed = tmp_path / 'changed'
    rewrite_npz(snapshot, changed, replace={
        MODEL + 'l1/W': numpy.zeros((16, 784), dtype)})
    os.replace(str(changed), str(snapshot))
    export_refused(tmp_path, snapshot, 'l1/W', numpy.dtype(dtype).name)
    if dtype in ('complex64', 'float16', '<U2'):
        resume_refused(tmp_path, snapshot, 'l1/W')


def test_not_a_zip_file_is_not_called_a_pickle(tmp_path, run):
    copy = copy_run(run, tmp_path)
    snapshot = copy / 'snapshot_iter_10'
    snapshot.write_bytes(b'\x80\x04K\x01.')  # a pickle of the number 1
    for result in (export_refused(tmp_path, snapshot, 'not an NPZ archive'),
                   resume_refused(tmp_path, snapshot, 'not an NPZ archive')):
        assert 'pickle' not in result.err


@pytest.mark.parametrize('key, value, word', [
    ('extensions/LogReport/_log', numpy.array('{"a": 1}'), '_log'),
    ('updater/iterator:main/order', numpy.arange(500) + 10 ** 6, 'order'),
    (MODEL + 'b1/avg_mean', numpy.full(16, numpy.nan, numpy.float32),
     'NaN'),
    (MODEL + 'b2/avg_var', numpy.full(16, numpy.inf, numpy.float32),
     'infinite'),
    (MODEL + 'b1/avg_var', numpy.full(16, -1, numpy.float32), 'negative'),
    ('updater/iterator:main/current_position', numpy.array(10 ** 12),
     'position'),
    ('updater/iteration', numpy.array(-95), 'negative'),
])
def test_inconsistent_state_is_refused_on_resume(tmp_path, run, key, value,
                                                 word):
    copy = copy_run(run, tmp_path)
    snapshot = copy / 'snapshot_iter_10'
    changed = tmp_path / 'changed'
    rewrite_npz(snapshot, changed, replace={key: value})
    os.replace(str(changed), str(snapshot))
    resume_refused(tmp_path, snapshot, word)


@pytest.mark.parametrize('what', ['snapshot', 'config.json'])
def test_fifo_inputs_do_not_hang(tmp_path, run, what):
    copy = copy_run(run, tmp_path)
    path = copy / ('snapshot_iter_10' if what == 'snapshot' else what)
    path.unlink()
    special_file(path, 'fifo')
    snapshot = copy / 'snapshot_iter_10'
    export_refused(tmp_path, snapshot, str(path), 'FIFO')
    # --resume's argument must be a file (argparse, exit 2)
    resume_refused(tmp_path, snapshot, str(path),
                   'FIFO' if what == 'config.json' else 'not a file')


def test_config_json_of_dev_zero(tmp_path, run):
    copy = copy_run(run, tmp_path)
    (copy / 'config.json').unlink()
    os.symlink('/dev/zero', str(copy / 'config.json'))
    export_refused(tmp_path, copy / 'snapshot_iter_10',
                   str(copy / 'config.json'), 'character device')


# --- data sets: bounded decompression, special files, permissions ---------

@pytest.fixture
def data_dir(tmp_path):
    """A copy of the four MNIST files, and a packed MLP."""
    directory = tmp_path / 'data'
    shutil.copytree(mnist.EMBEDDED_DIR, str(directory))
    return directory


def test_gzip_bomb_in_the_data_directory(tmp_path, good_file, data_dir):
    name = 't10k-images-idx3-ubyte'
    # a valid IDX header of 10000 images, then 1 GiB of zeros
    prefix = bytes.fromhex('00000803') + (10000).to_bytes(4, 'big') + \
        (28).to_bytes(4, 'big') * 2
    gzip_bomb(data_dir / (name + '.gz'), prefix, 1 << 30)
    network = tmp_path / 'net.bnn'
    network.write_bytes(good_file['mlp'])
    refused(tmp_path, ['inference.py', str(network), '--data-dir',
                       str(data_dir)], 'inference.py', name,
            'decompresses to more than the {} bytes'.format(
                mnist.SIZES[name]))


def test_fifo_in_the_data_directory(tmp_path, good_file, data_dir):
    name = 't10k-labels-idx1-ubyte'
    (data_dir / (name + '.gz')).unlink()
    special_file(data_dir / name, 'fifo')
    network = tmp_path / 'net.bnn'
    network.write_bytes(good_file['mlp'])
    refused(tmp_path, ['inference.py', str(network), '--data-dir',
                       str(data_dir)], 'inference.py', name, 'FIFO',
            timeout=60)


def test_a_directory_without_permission_says_so(monkeypatch, tmp_path):
    def denied(path, *args, **kwargs):
        raise PermissionError(13, 'Permission denied', path)
    monkeypatch.setattr(idx.os, 'stat', denied)
    with pytest.raises(idx.files.DatasetError) as e:
        mnist.load_raw(str(tmp_path))
    assert 'Permission denied' in str(e.value)
    assert 'neither' not in str(e.value)


def test_unreadable_data_directory_says_so(tmp_path, good_file, data_dir):
    # the child is denied the directory (as root too: it runs without the
    # capabilities that let root read anything)
    network = tmp_path / 'net.bnn'
    network.write_bytes(good_file['mlp'])
    before = snapshot_of_files(tmp_path)
    os.chmod(str(data_dir), 0)
    try:
        result = run_capped(['inference.py', str(network), '--data-dir',
                             str(data_dir)], timeout=60,
                            permissions_bind=True)
    finally:
        os.chmod(str(data_dir), 0o755)
    assert_refused(result, 'inference.py', 'Permission denied')
    assert 'neither' not in result.err
    assert result.rss < RSS_BOUND
    assert snapshot_of_files(tmp_path) == before

"""Hostile files made on the spot, and commands run under a memory cap.

What an attacker would hand a user: packed networks with a valid checksum
and a forged header (:func:`forge`), snapshots with a forged member
(:func:`rewrite_npz`), gzip bombs (:func:`gzip_bomb`), and special files
in place of inputs and outputs (:func:`special_file`). :func:`run_capped`
runs a command of the repository as a child process with its address space
capped and a timeout, and returns its exit status, output and peak
resident memory.
"""
import collections
import gzip
import hashlib
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy

from qnn.packed import format as packed_format
from qnn.packed import kernels as packed_kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the address space a command may map: inference.py, export.py and a
# 1-epoch train_mnist.py run, each with one thread, ran within 1 GiB; a
# reader that loaded a forged size of 2 GB would fail
MEMORY_CAP = 2 << 30
# what a refused input may cost at most, resident: inference.py with the
# MNIST files loaded peaks near 220 MB (export.py 60 MB, a training run
# 420 MB: the tests give their own bounds)
RSS_BOUND = 400 << 20

Result = collections.namedtuple('Result', 'status out err rss seconds')


def run_capped(argv, timeout=120, permissions_bind=False):
    """Runs ``python argv...`` in the repository root with the address
    space capped at :data:`MEMORY_CAP`, no standard input and one thread
    per library (with ``permissions_bind``, file permissions apply even if
    this process is root), through ``capped_child.py``; kills it (and its
    children) after ``timeout`` seconds. Returns a :class:`Result`;
    ``rss``: the command's peak resident bytes, ``status`` ``None`` if it
    was killed for the timeout."""
    env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1',
               NUMBA_NUM_THREADS='1')
    with tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile('r') as report:
        start = os.times().elapsed
        child = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, 'tests', 'capped_child.py'),
             str(MEMORY_CAP), '1' if permissions_bind else '0', report.name,
             sys.executable] + list(argv),
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=err, start_new_session=True)
        try:
            status = child.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            status = None
        seconds = os.times().elapsed - start
        out.seek(0)
        err.seek(0)
        rss = report.read().strip()
        return Result(status, out.read().decode('utf-8', 'replace'),
                      err.read().decode('utf-8', 'replace'),
                      int(rss) if rss else None, seconds)


def assert_refused(result, program, *words):
    """Exit 1 with one line on stderr from ``program``, or exit 2 with
    argparse's (its usage, then one line), naming ``words``; no
    traceback."""
    assert result.status in (1, 2), result
    lines = result.err.splitlines()
    if result.status == 2 and lines and lines[0].startswith('usage: '):
        lines = [line for line in lines if not line.startswith(' ')][1:]
    assert len(lines) == 1 and lines[0].startswith(program + ': '), result
    assert 'Traceback' not in result.err
    for word in words:
        assert word in result.err, (word, result.err)


def snapshot_of_files(directory):
    """``{name: (mode, inode, size, mtime_ns, sha256)}`` of every file
    under ``directory`` (the SHA-256 of those up to 64 MiB), to show that a
    command touched none."""
    found = {}
    for base, directories, names in os.walk(str(directory)):
        for name in names + directories:
            path = os.path.join(base, name)
            status = os.lstat(path)
            digest = None
            if stat.S_ISREG(status.st_mode) and status.st_size < 1 << 26:
                with open(path, 'rb') as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            found[os.path.relpath(path, str(directory))] = (
                status.st_mode, status.st_ino, status.st_size,
                status.st_mtime_ns, digest)
    return found


# packed networks

def random_bits(rng, shape, n_bits):
    """``uint64`` words of random bits, the padding past ``n_bits`` 0."""
    bits = rng.random(shape[:-1] + (n_bits,)) < 0.5
    words = packed_kernels.pack_bits(bits)
    assert words.shape == shape
    return words


def _thresholds(rng, n, levels=None, spread=50):
    shape = (n,) if levels is None else (n, levels)
    T = rng.integers(-spread, spread + 1, shape).astype(numpy.int32)
    return numpy.sort(T, axis=-1) if levels else T


def _affine(rng, n):
    return {'mean': rng.normal(0, 5, n).astype(numpy.float32),
            'inv_std': rng.uniform(0.05, 0.5, n).astype(numpy.float32),
            'gamma': rng.uniform(0.5, 2, n).astype(numpy.float32),
            'beta': rng.normal(0, 1, n).astype(numpy.float32)}


MNIST_INPUT = {'dataset': 'mnist', 'shape': [1, 28, 28], 'size': 784,
               'pixel_bits': 8, 'scale': 255.0, 'shift': 0.0}


def dense_network(rng, units=16):
    """An MLP 784 -> ``units`` -> 10: a bit-plane layer, an XNOR one."""
    Layer = packed_format.Layer
    return packed_format.PackedNetwork([
        Layer('l1', 'planes', 784, units, 'sign',
              random_bits(rng, (units, 13), 784),
              thresholds=_thresholds(rng, units, spread=20000)),
        Layer('l2', 'xnor', units, 10, 'affine',
              random_bits(rng, (10, 1), units), **_affine(rng, 10)),
    ], dict(MNIST_INPUT), {'snapshot': 'forged'})


def conv_network(rng):
    """Two 3x3 convolutions (pixels, then signs) of 4 channels, each
    pooled, then a dense XNOR output layer: 28x28 -> 14x14 -> 7x7 -> 10."""
    Layer = packed_format.Layer

    def conv(name, kind, in_shape, spread):
        return Layer(name, kind, in_shape[0] * in_shape[1] * in_shape[2],
                     4 * (in_shape[1] // 2) * (in_shape[2] // 2), 'sign',
                     random_bits(rng, (4, 9, 1), in_shape[0]),
                     conv={'in_shape': list(in_shape), 'channels': 4,
                           'pool': True},
                     thresholds=_thresholds(rng, 4, spread=spread),
                     flipped=(rng.random(4) < 0.5).astype(numpy.uint8))
    return packed_format.PackedNetwork([
        conv('conv1_1', 'conv_pixels', (1, 28, 28), 1000),
        conv('conv2_1', 'conv_xnor', (4, 14, 14), 20),
        Layer('fc1', 'xnor', 196, 10, 'affine',
              random_bits(rng, (10, 4), 196), **_affine(rng, 10)),
    ], dict(MNIST_INPUT), {'snapshot': 'forged'})


def levels_network(rng, units=8):
    """A 2-bit MLP 784 -> ``units`` -> 10 (2-bit weights and outputs)."""
    Layer = packed_format.Layer
    return packed_format.PackedNetwork([
        Layer('l1', 'levels_pixels', 784, units, 'levels',
              random_bits(rng, (units, 2, 13), 784),
              levels={'weight_bits': 2, 'input_bits': 8, 'output_bits': 2},
              thresholds=_thresholds(rng, units, 3, spread=30000)),
        Layer('l2', 'levels', units, 10, 'affine',
              random_bits(rng, (10, 2, 1), units),
              levels={'weight_bits': 2, 'input_bits': 2,
                      'output_bits': None}, **_affine(rng, 10)),
    ], dict(MNIST_INPUT), {'snapshot': 'forged'})


def split(data):
    """``(header, {(layer, array): bytes})`` of a packed file's bytes."""
    _, _, length = struct.unpack_from('<8sII', data)
    header = json.loads(data[16:16 + length].decode('utf-8'))
    blobs = {}
    for index, layer in enumerate(header['layers']):
        for name, spec in layer['arrays'].items():
            size = int(numpy.prod(spec['shape'])) * \
                numpy.dtype(spec['dtype']).itemsize
            blobs[index, name] = data[spec['offset']:spec['offset'] + size]
    return header, blobs


def forge(data, mutate=None, patch=None, shift=4096, version=None):
    """A packed file made from the good file ``data`` with a valid
    checksum: every array moved ``shift`` bytes further (room for a longer
    header), ``file_size`` set to the new size, then ``mutate(header)``
    (which may change anything, ``file_size`` and offsets included: the
    arrays stay where they were put; the string ``'@1e999@'`` becomes the
    number ``1e999``) and ``patch(body)`` (a bytearray of everything
    before the checksum)."""
    header, blobs = split(data)
    places = {}
    end = 0
    for (index, name), blob in blobs.items():
        spec = header['layers'][index]['arrays'][name]
        spec['offset'] += shift
        places[index, name] = spec['offset']
        end = max(end, spec['offset'] + len(blob))
    end = (end + 63) // 64 * 64
    header['file_size'] = end + 32
    if mutate is not None:
        mutate(header)
    # the JSON number 1e999, which Python reads as an infinity
    text = json.dumps(header).encode('utf-8').replace(b'"@1e999@"',
                                                      b'1e999')
    body = bytearray(max(end, 16 + len(text)))
    body[:16] = struct.pack('<8sII', packed_format.MAGIC,
                            version or packed_format.VERSION, len(text))
    body[16:16 + len(text)] = text
    for key, blob in blobs.items():
        body[places[key]:places[key] + len(blob)] = blob
    if patch is not None:
        patch(body)
    return bytes(body) + hashlib.sha256(body).digest()


# snapshots

def rewrite_npz(source, path, replace=None, add=None, drop=()):
    """Writes to ``path`` a copy of the NPZ file ``source`` with the
    members of ``replace`` (``{key: array}``) in place of theirs, those of
    ``add`` (``{key: bytes of a whole .npy member}``) added, and ``drop``
    left out."""
    with zipfile.ZipFile(str(source)) as old, \
            zipfile.ZipFile(str(path), 'w', zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            key = info.filename[:-len('.npy')]
            if key in drop:
                continue
            if replace and key in replace:
                with new.open(info.filename, 'w') as f:
                    numpy.lib.format.write_array(f, numpy.asarray(
                        replace[key]), allow_pickle=False)
            else:
                new.writestr(info, old.read(info))
        for key, member in (add or {}).items():
            if callable(member):
                with new.open(key + '.npy', 'w', force_zip64=True) as f:
                    member(f)
            else:
                new.writestr(key + '.npy', member)


def npy_header(shape, dtype):
    """The bytes of a ``.npy`` header declaring ``shape`` and ``dtype``."""
    import io
    stream = io.BytesIO()
    numpy.lib.format.write_array_header_1_0(stream, {
        'descr': numpy.lib.format.dtype_to_descr(numpy.dtype(dtype)),
        'fortran_order': False, 'shape': tuple(shape)})
    return stream.getvalue()


def zeros_member(shape, dtype, chunk=1 << 24):
    """A member writer (:func:`rewrite_npz`'s ``add``) of a real array of
    zeros of ``shape``: it deflates about 1000 to 1, a zip bomb."""
    def write(f):
        f.write(npy_header(shape, dtype))
        left = int(numpy.prod(shape)) * numpy.dtype(dtype).itemsize
        zeros = bytes(chunk)
        while left:
            f.write(zeros[:min(chunk, left)])
            left -= min(chunk, left)
    return write


def header_bomb_member(size, chunk=1 << 24):
    """A member writer of a ``.npy`` header that says it is 2 GiB long,
    then ``size`` zeros: NumPy's header reader reads all of it before it
    looks."""
    def write(f):
        f.write(b'\x93NUMPY\x02\x00' + (1 << 31).to_bytes(4, 'little'))
        zeros = bytes(chunk)
        for _ in range(size // chunk):
            f.write(zeros)
    return write


def gzip_bomb(path, prefix, size, chunk=1 << 26):
    """A gzip file of ``prefix`` and then zeros, ``size`` bytes in all
    uncompressed: members of ``chunk`` zeros compressed once and repeated
    (a gzip file may hold many), so it is made in a second."""
    zeros = gzip.compress(bytes(chunk), compresslevel=9)
    with open(str(path), 'wb') as f:
        f.write(gzip.compress(prefix))
        for _ in range((size - len(prefix)) // chunk):
            f.write(zeros)


def special_file(path, kind):
    """Makes ``path`` a ``'fifo'``, a ``'device'`` (a character device
    like /dev/null where this user may make one, else a symbolic link to
    /dev/null, which every check follows), a ``'directory'`` or a
    ``'read-only'`` (0444) regular file; returns what is there, for
    comparing afterwards."""
    path = str(path)
    if kind == 'fifo':
        os.mkfifo(path)
    elif kind == 'device':
        try:
            os.mknod(path, 0o666 | 0o020000, os.makedev(1, 3))
        except PermissionError:
            os.symlink('/dev/null', path)
    elif kind == 'directory':
        os.mkdir(path)
    else:
        with open(path, 'wb') as f:
            f.write(b'keep me\n')
        os.chmod(path, 0o444)
    return os.lstat(path)


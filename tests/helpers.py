"""What several test modules share: the backends of
``chainer.testing.inject_backend_tests``, references of the quantizers,
writers of test data, trained networks' predictions and small trainers.

The GPU and ChainerX entries of :data:`BACKENDS` carry chainer's ``gpu`` /
``chainerx`` marks and are skipped by conftest.py where the machine lacks
them.
"""
import collections
import gzip
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import zipfile

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.functions as F
import chainer.links as L
from chainer import training

import export
import function_quantized_linear
from qnn import datasets
from qnn.backends import cpu_kernels
from qnn.datasets import cifar10
from qnn.packed import bits as packed_bits
from qnn.packed import convnet
from qnn.packed import folding
from qnn.packed import format as packed_format
from qnn.training import options as train_options
from qnn.training.extensions import snapshots
from qnn.utils.pixels import PIXEL_MAX
import qst
import train_mnist



# the repository: the tests run its scripts from there
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BACKENDS = [
    {},  # NumPy
    {'use_cuda': True},  # CuPy
    {'use_chainerx': True, 'chainerx_device': 'native:0'},
    {'use_chainerx': True, 'chainerx_device': 'cuda:0'},
]


def seed_generators(seed):
    """Seeds NumPy's global generator and, where CUDA is available, CuPy's:
    a stochastic rounding on a GPU draws from ``cupy.random``."""
    numpy.random.seed(seed)
    from chainer.backends import cuda
    if cuda.available:
        cuda.cupy.random.seed(seed)


# --- the quantizers of qst -----------------------------------------------

def sign_reference(x):
    return numpy.where(x >= 0, 1, -1).astype(x.dtype)


def levels_reference(bits, quantizer, dtype):
    """The levels of the documented grid, in float64, ascending."""
    if quantizer == 'linear':
        n = 2 ** bits - 1
        return (2 * numpy.arange(n + 1) - n) / n
    work = numpy.promote_types(dtype, numpy.float32)
    e_min = max(-(2 ** (bits - 1) - 1), numpy.finfo(work).minexp)
    magnitudes = 2.0 ** numpy.arange(e_min, 1)
    return numpy.concatenate([-magnitudes[::-1], magnitudes])


def quantize_reference(x, bits, quantizer):
    """Nearest level by search over the grid (ties up), in float64."""
    x64 = x.astype(numpy.float64)
    if bits == 32:
        return numpy.asarray(numpy.clip(x64, -1, 1)).astype(x.dtype)
    if bits == 1:
        return sign_reference(x)
    levels = levels_reference(bits, quantizer, x.dtype)
    if quantizer == 'linear':
        d = numpy.abs(numpy.clip(x64, -1, 1)[..., None] - levels)
    else:  # nearest in log2 of the magnitude, on the side of the sign
        sign = numpy.where(x64 >= 0, 1, -1)[..., None]
        smallest = numpy.abs(levels).min()
        magnitude = numpy.clip(numpy.abs(x64), smallest, 1)
        d = numpy.abs(numpy.log2(magnitude)[..., None]
                      - numpy.log2(numpy.abs(levels)))
        d[sign != numpy.sign(levels)] = numpy.inf
    # the last index of the minimum: ties go to the upper level
    index = d.shape[-1] - 1 - numpy.argmin(d[..., ::-1], axis=-1)
    return numpy.asarray(levels[index]).astype(x.dtype)


# --- quantized layers ---------------------------------------------------


def tolerance(dtype):
    if dtype == numpy.float16:
        return {'atol': 5e-3, 'rtol': 5e-3}
    return {'atol': 1e-5, 'rtol': 1e-5}


def make_weight(shape, dtype):
    W = numpy.random.uniform(-1, 1, shape).astype(dtype)
    W.flat[:3] = [0.0, -0.0, 1e-6]  # sign(0) must be +1
    return W


def check_quantized(got, exact, bits):
    """``got`` is ``exact`` on the grid of quantize_gradient."""
    m = 2 ** (bits - 1) - 1
    scale = 2.0 ** numpy.ceil(numpy.log2(numpy.abs(exact).max()))
    steps = got.astype(numpy.float64) / (scale / m)
    # whole steps, up to the rounding of the result to the dtype
    atol = m * 1e-3 if got.dtype == numpy.float16 else 1e-3
    numpy.testing.assert_allclose(steps, numpy.round(steps), atol=atol)
    assert ((numpy.sign(got) == numpy.sign(exact)) | (got == 0)).all()
    assert (numpy.abs(got - exact) <= scale / m * 1.01).all()
    assert (got != exact.astype(got.dtype)).any()


# --- CIFAR-10 batches in the official format ---------------------------


ROWS = 10  # per batch: 50 training and 10 test images


NAMES = cifar10.TRAIN_BATCHES + (cifar10.TEST_BATCH,)


# What Python 2 with NumPy 1 called the globals an array pickle needs.
_PYTHON2_NAMES = {
    numpy.ndarray.__reduce__(numpy.empty(0))[0]:
        ('numpy.core.multiarray', '_reconstruct'),
    numpy.ndarray: ('numpy', 'ndarray'),
    numpy.dtype: ('numpy', 'dtype'),
}


class Python2Pickler(pickle._Pickler):
    """Pickles (protocol 2) as Python 2's cPickle did for CIFAR-10."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack('<i', len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        # the text inside NumPy's reduce values ('u1', '|', 'b') was a
        # Python 2 str, that is bytes
        self.save_bytes(obj.encode('ascii'))

    def save_global(self, obj, name=None):
        module, name = _PYTHON2_NAMES.get(obj, (obj.__module__,
                                                obj.__name__))
        self.write(pickle.GLOBAL + module.encode() + b'\n' +
                   name.encode() + b'\n')
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def python2_pickle(obj):
    f = io.BytesIO()
    Python2Pickler(f, protocol=2).dump(obj)
    return f.getvalue()


def batch(images, labels, name):
    return {b'batch_label': name.encode(), b'labels': list(labels),
            b'data': images,
            b'filenames': [b'img_%d.png' % i for i in range(len(labels))]}


def write_batches(directory, seed=0):
    """Writes six batches of ROWS random images with balanced labels;
    returns {name: (images, labels)}."""
    rng = numpy.random.RandomState(seed)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in NAMES:
        images = rng.randint(0, 256, (ROWS, 3072)).astype(numpy.uint8)
        labels = [int(t) for t in rng.permutation(10)]
        (directory / name).write_bytes(
            python2_pickle(batch(images, labels, name)))
        out[name] = images, labels
    (directory / 'batches.meta').write_bytes(python2_pickle(
        {b'label_names': [b'airplane', b'automobile', b'bird', b'cat',
                          b'deer', b'dog', b'frog', b'horse', b'ship',
                          b'truck'],
         b'num_cases_per_batch': 10000, b'num_vis': 3072}))
    return out


# --- trained networks and trainers --------------------------------------


def run_main(capsys, main, *argv):
    """``(exit status, stdout, stderr)`` of a command's ``main`` that ends
    with ``SystemExit`` (an error)."""
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def run_export(capsys, *argv):
    """:func:`run_main` of export.py."""
    return run_main(capsys, export.main, *argv)


def chainer_predictions(snapshot, images):
    with open(os.path.join(os.path.dirname(snapshot), 'config.json')) as f:
        config = json.load(f)
    args = train_options.parse_args([])
    vars(args).update(config)
    model = train_mnist.build_model(args)
    snapshots.load_arrays(snapshot, model, 'updater/model:main/')
    pixels = datasets.INPUT_RANGES[config.get('input_range', 'unit')]
    x = images.astype(numpy.float32)
    x *= pixels['scale'] / PIXEL_MAX  # as qnn.datasets.files.to_dataset
    x += numpy.float32(pixels['shift'])  # as qnn.datasets.get_dataset
    with chainer.using_config('train', False), \
            chainer.no_backprop_mode():
        return model.predictor(x).array.argmax(axis=1)


def make_trainer(out, n_out=2, n_samples=20, epochs=4):
    """A small real trainer: a linear classifier on random data, 4
    iterations per epoch, with NumPy's random state in its snapshots."""
    rng = numpy.random.RandomState(0)
    x = rng.rand(n_samples, 4).astype(numpy.float32)
    t = (x.sum(axis=1) > 2).astype(numpy.int32)
    model = L.Classifier(L.Linear(4, n_out))
    optimizer = chainer.optimizers.Adam()
    optimizer.setup(model)
    iterator = chainer.iterators.SerialIterator(
        chainer.datasets.TupleDataset(x, t), 5)
    updater = training.updaters.StandardUpdater(iterator, optimizer)
    trainer = training.Trainer(updater, (epochs, 'epoch'), out=str(out))
    trainer.extend(snapshots.NumpyRandomState())
    return trainer


def files_in(directory):
    return sorted(os.listdir(str(directory)))


# --- packed convolutions ------------------------------------------------


# (in channels, height, width, out channels, pool): odd sizes, channel
# counts that fill no word, and more than a word
SHAPES = [(3, 7, 5, 5, True), (16, 14, 14, 32, True), (70, 4, 3, 65, False),
          (1, 1, 1, 2, True), (64, 7, 7, 64, True)]


def random_channel_bn(rng, channels, bound):
    """gamma with negative and zero entries (beta of both signs there);
    some means on an integer with beta 0: a tie at the threshold."""
    gamma = rng.normal(size=channels)
    gamma[::4] *= -1
    gamma[2::7] = 0
    beta = rng.normal(size=channels)
    mean = rng.uniform(-bound / 3, bound / 3, size=channels)
    var = rng.uniform(0.5, 4, size=channels) * bound
    ties = slice(1, None, 3)
    mean[ties] = numpy.round(mean[ties])
    beta[ties] = 0
    return [v.astype(numpy.float32) for v in (gamma, beta, mean, var)]


def folded_layer(rng, shape, first):
    C, H, W, K, pool = shape
    weights = rng.normal(size=(K, C, 3, 3)).astype(numpy.float32)
    bound = 9 * C * (255 if first else 1)
    bn = random_channel_bn(rng, K, bound)
    params = {'conv/W': weights}
    params.update({'bn/' + key: value
                   for key, value in zip(convnet.BN_KEYS, bn)})
    layer = convnet._conv_layer(params, 'conv', 'bn', (C, H, W), K, pool,
                                first, scale=1.)
    return layer, numpy.where(weights >= 0, 1, -1), bn


def random_maps(rng, n, C, H, W):
    """+-1 feature maps ``(n, C, H, W)`` and their packed words."""
    values = rng.choice([-1, 1], size=(n, C, H, W))
    words = packed_bits.pack_bits(values.transpose(0, 2, 3, 1) > 0)
    return values, words


def chainer_sign_layer(x, W, bn):
    """Chainer's evaluation-mode hidden unit: sign(BN(x q(W)^T))."""
    with chainer.using_config('train', False):
        a = function_quantized_linear.quantized_linear(
            x.astype(numpy.float32), W.astype(numpy.float32))
        y = F.fixed_batch_normalization(
            a, *[v.astype(numpy.float32) for v in bn],
            eps=folding.DEFAULT_EPS)
        return qst.qst(y).array > 0


def random_unit_bn(rng, units, spread):
    """gamma with negative and zero entries; mean inside the range the
    pre-activation can take."""
    gamma = rng.normal(size=units)
    gamma[::7] = 0
    gamma[1::5] *= -1
    beta = rng.normal(size=units)
    beta[::14] = -abs(beta[::14])  # some gamma = 0 units never fire
    mean = rng.normal(size=units) * spread
    var = rng.random(units) * spread ** 2 + 0.01
    return gamma, beta, mean, var


def sign_layer(kind, bits, thresholds):
    return packed_format.Layer('l', kind, bits.shape[1], bits.shape[0],
                               'sign', packed_bits.pack_bits(bits),
                               thresholds=thresholds)


def random_network(rng, sizes):
    layers = []
    for index, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        W = rng.normal(size=(n_out, n_in))
        name = 'l{}'.format(index + 1)
        kind = 'planes' if index == 0 else 'xnor'
        if index == len(sizes) - 2:
            bits, affine = folding.fold_affine(
                W, *random_unit_bn(rng, n_out, numpy.sqrt(n_in)))
            layers.append(packed_format.Layer(
                name, kind, n_in, n_out, 'affine',
                packed_bits.pack_bits(bits), **dict(zip(
                    ('mean', 'inv_std', 'gamma', 'beta'), affine))))
            continue
        fold = folding.fold_sign_from_pixels if index == 0 \
            else folding.fold_sign_from_signs
        spread = numpy.sqrt(n_in) * (60 / 255 if index == 0 else 1)
        bits, T = fold(W, *random_unit_bn(rng, n_out, spread))
        layers.append(packed_format.Layer(name, kind, n_in, n_out, 'sign',
                                          packed_bits.pack_bits(bits),
                                          thresholds=T))
    pixels = {'size': sizes[0], 'pixel_bits': 8, 'scale': 255, 'shift': 0}
    if sizes[0] == 784:  # MNIST's images, which a file can hold
        pixels.update(dataset='mnist', shape=[1, 28, 28])
    return packed_format.PackedNetwork(layers, pixels)


def with_kernels(monkeypatch, kernels, function, *args):
    """``function(*args)`` with the numba kernels (``kernels``) or the
    NumPy references."""
    if not kernels:
        monkeypatch.setenv('QNN_CPU_KERNELS', 'numpy')
    try:
        return function(*args)
    finally:
        monkeypatch.delenv('QNN_CPU_KERNELS', raising=False)


# a small and a large size, not round numbers
# array sizes for the numba loops: a small one and one past the parallel
# threshold, neither a round number
KERNEL_SIZES = [1000, 3 * (1 << 15) + 5]
# the tests of a numba loop against its NumPy reference
needs_numba = pytest.mark.skipif(not cpu_kernels.available(),
                                 reason='numba kernels not available')


def ap2_reference(x):
    """AP2 by its definition, independent of qnn.functions.ap2."""
    return numpy.sign(x) * 2.0 ** numpy.round(numpy.log2(numpy.abs(x)))


def shift_bn_inputs(shape, dtype, seed=0):
    """``(x, gamma, beta, gy)`` of a shift-based batch normalization (one
    gamma negative)."""
    rng = numpy.random.RandomState(seed)
    x = (rng.normal(0.5, 1, shape) * rng.uniform(0.2, 5, shape[1])
         [(None, Ellipsis) + (None,) * (len(shape) - 2)]).astype(dtype)
    gamma = rng.uniform(0.3, 3, shape[1]).astype(dtype)
    gamma[0] = -gamma[0]
    beta = rng.uniform(-1, 1, shape[1]).astype(dtype)
    gy = rng.normal(0, 1, shape).astype(dtype)
    return x, gamma, beta, gy


def channels_expanded(a, ndim):
    return a[(None, Ellipsis) + (None,) * (ndim - 2)]


def shift_bn_reference(x, gamma, beta, eps, mean=None, var=None):
    """``(y, mean, var)`` of the shift-based batch normalization in
    float64, with the batch's statistics unless ``mean`` and ``var``."""
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(numpy.float64)
    if mean is None:
        mean = x64.mean(axis=axes)
        var = x64.var(axis=axes)
    scale = ap2_reference(gamma.astype(numpy.float64)) * \
        ap2_reference(1 / numpy.sqrt(var + eps))
    y = channels_expanded(scale, x.ndim) * (
        x64 - channels_expanded(mean, x.ndim)) + \
        channels_expanded(beta, x.ndim)
    return y, mean, var


# train_mnist.py, run as a user runs it
TRAIN_MNIST = os.path.join(ROOT, 'train_mnist.py')


COLUMNS = ['epoch', 'main/loss', 'validation/main/loss', 'main/accuracy',
           'validation/main/accuracy', 'elapsed_time']


SMALL = ['--unit', '32', '--train-subset', '500', '--test-subset', '200',
         '--batchsize', '50']


def run_files(directory):
    """The files of a run, without the output lock
    (qnn/training/output_lock.py)."""
    return sorted(name for name in os.listdir(str(directory))
                  if not name.startswith('.lock'))


def run_script(*args):
    return subprocess.run(
        [sys.executable, TRAIN_MNIST] + list(args), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=300)


def read_log(out):
    with open(os.path.join(str(out), 'log')) as f:
        return json.load(f)


def log_values(out):
    """The log without the wall-clock times."""
    return [{key: value for key, value in entry.items()
             if key != 'elapsed_time'} for entry in read_log(out)]


def one_error_line(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith('train_mnist.py: error: ')
    return lines[0]


# train_mnist.py in a child process, each update slowed down by argv[1]
# seconds so that a test can send it signals during training
SLOW_CHILD = textwrap.dedent("""
    import sys, time
    from qnn.backends import chainer_compat
    from chainer.training import updaters
    import train_mnist
    update_core = updaters.StandardUpdater.update_core
    def slow_update_core(self):
        time.sleep(float(sys.argv[1]))
        update_core(self)
    updaters.StandardUpdater.update_core = slow_update_core
    sys.exit(train_mnist.main(sys.argv[2:]))
""")


def start_slow_child(seconds_per_update, *args):
    return subprocess.Popen(
        [sys.executable, '-c', SLOW_CHILD, str(seconds_per_update)] +
        list(args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True)


def read_until_row(proc, epoch):
    """Reads the child's stdout up to the report row of ``epoch``."""
    for line in proc.stdout:
        if line.split()[:1] == [str(epoch)]:
            return
    raise AssertionError('no row for epoch {}: {}'.format(
        epoch, proc.communicate()))


# --- C toolchains ------------------------------------------------------------
# Builds and runs the C source of :mod:`qnn.packed.c_source` on the
# targets the tests check, with Debian's toolchains (``make c-toolchains``
# installs them):
# 
# * x86-64: gcc and clang, ``tests/c/run_images.c`` reading a file of
#   images;
# * AArch64: gcc-aarch64-linux-gnu, the same program linked statically and
#   run by qemu-user's ``qemu-aarch64``;
# * Cortex-M4: gcc-arm-none-eabi with newlib, ``tests/c/cortex_m4.c`` (its
#   own start-up code, images read over semihosting) on qemu-system-arm's
#   ``mps2-an386`` board;
# * WebAssembly: clang ``--target=wasm32`` and lld, ``tests/c/wasm.c``, run
#   by node with ``tests/c/run_wasm.js``.
# 
# Each run writes records of the logits (float32) and the returned class
# (int32) per image. A test that needs a missing tool skips, and fails when
# ``CI`` is ``true``.

# the C harnesses of the targets
C_HARNESSES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'c')
# the tool -> the Debian package that has it
C_PACKAGES = {
    'gcc': 'gcc', 'clang': 'clang', 'objdump': 'binutils',
    'wasm-ld': 'lld', 'node': 'nodejs',
    'aarch64-linux-gnu-gcc': 'gcc-aarch64-linux-gnu',
    'aarch64-linux-gnu-objdump': 'binutils-aarch64-linux-gnu',
    'qemu-aarch64': 'qemu-user',
    'arm-none-eabi-gcc': 'gcc-arm-none-eabi',
    'arm-none-eabi-objdump': 'binutils-arm-none-eabi',
    'arm-none-eabi-size': 'binutils-arm-none-eabi',
    'qemu-system-arm': 'qemu-system-arm',
}
C_STRICT = ['-std=c99', '-Wall', '-Wextra', '-Werror', '-pedantic']
# contraction to fused multiply-adds allowed: the logits must not change
C_CONTRACT = ['-ffp-contract=fast']
C_M4 = ['-mcpu=cortex-m4', '-mthumb', '-mfloat-abi=hard',
      '-mfpu=fpv4-sp-d16']
C_WASM = ['--target=wasm32']
# the compilers of each target, for the clean compiles
C_COMPILERS = {
    'x86-64 gcc': ['gcc'], 'x86-64 clang': ['clang'],
    'aarch64 gcc': ['aarch64-linux-gnu-gcc'],
    'cortex-m4 gcc': ['arm-none-eabi-gcc'] + C_M4,
    'wasm32 clang': ['clang'] + C_WASM,
}
# instructions that fuse a multiplication and an addition
C_FUSED = re.compile(r'\b(v?fn?m(add|sub)\w*|fmla|fmls|vfn?m[as]\.f32)\b')
C_TIMEOUT = 600


def require_tools(*tools):
    """Skips the test unless every tool is on ``PATH``; fails instead when
    ``CI`` is ``true`` (``make test`` installs them)."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    packages = sorted({C_PACKAGES.get(tool, tool) for tool in missing})
    message = '{} not found (Debian: {}); run_tool `make c-toolchains`'.format(
        ', '.join(missing), ' '.join(packages))
    if os.environ.get('CI', '').lower() == 'true':
        pytest.fail('CI must run_tool the C targets\' tests, but ' + message,
                    pytrace=False)
    pytest.skip(message)


def write_model(directory, files):
    os.makedirs(str(directory), exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(str(directory), name), 'w') as f:
            f.write(text)
    return str(directory)


def run_tool(command, cwd=None, timeout=C_TIMEOUT):
    result = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=timeout)
    assert result.returncode == 0, '{}\n{}'.format(' '.join(command),
                                                   result.stdout)
    return result.stdout


def compile_object(directory, compiler, flags, output):
    """``qnn_model.c`` of ``directory`` compiled with the strict warnings
    to ``output``; returns its path."""
    path = os.path.join(directory, output)
    run_tool(compiler + C_STRICT + flags + ['-c', 'qnn_model.c', '-o', path],
        cwd=directory)
    return path


def records_dtype(classes):
    return numpy.dtype([('logits', '<f4', (classes,)), ('label', '<i4')])


def read_records(path, classes, images):
    records = numpy.fromfile(path, records_dtype(classes))
    assert len(records) == images, path
    return records


def build_hosted(directory, compiler, flags, name, link=()):
    """``run_images`` of ``directory``'s model, the model compiled with
    ``compiler``, the strict warnings and ``flags``."""
    model = compile_object(directory, compiler, flags, name + '.o')
    program = os.path.join(directory, name)
    run_tool(compiler + ['-std=c99', '-O2', '-I', directory] + list(link) + [
        os.path.join(C_HARNESSES, 'run_images.c'), model, '-o', program])
    return program


def run_hosted(program, images, classes, runner=()):
    """Records of ``program`` (a ``run_images``) over ``images``, run_tool
    directly or by ``runner`` (``['qemu-aarch64']``)."""
    folder = os.path.dirname(program)
    name = os.path.basename(program)
    images_path = os.path.join(folder, name + '.images')
    records_path = os.path.join(folder, name + '.records')
    numpy.ascontiguousarray(images, numpy.uint8).tofile(images_path)
    run_tool(list(runner) + [program, images_path, records_path])
    return read_records(records_path, classes, len(images))


def build_cortex_m4(directory, flags=('-Os',)):
    """The Cortex-C_M4 program of ``directory``'s model: ``(ELF path, path
    of the model's object)``."""
    sections = ['-ffunction-sections', '-fdata-sections']
    model = compile_object(directory, ['arm-none-eabi-gcc'] + C_M4,
                           list(flags) + C_CONTRACT + sections, 'm4_model.o')
    harness = os.path.join(directory, 'm4_harness.o')
    run_tool(['arm-none-eabi-gcc'] + C_M4 + ['-std=gnu99', '-Os', '-Wall',
                                      '-Wextra', '-Werror'] + sections + [
        '-I', directory, '-c', os.path.join(C_HARNESSES, 'cortex_m4.c'), '-o',
        harness])
    elf = os.path.join(directory, 'm4.elf')
    run_tool(['arm-none-eabi-gcc'] + C_M4 + [
        '--specs=nano.specs', '-nostartfiles', '-Wl,--gc-sections', '-T',
        os.path.join(C_HARNESSES, 'cortex_m4.ld'), harness, model, '-o', elf])
    return elf, model


def sizes(size_tool, path):
    """``{'text': ..., 'data': ..., 'bss': ...}`` of ``size`` (Berkeley
    format) for the file ``path``."""
    lines = run_tool([size_tool, path]).strip().splitlines()
    text, data, bss = (int(v) for v in lines[-1].split()[:3])
    return {'text': text, 'data': data, 'bss': bss}


def run_cortex_m4(elf, images, classes):
    """Records of the Cortex-C_M4 program over ``images`` under
    qemu-system-arm (mps2-an386, semihosting)."""
    folder = os.path.join(os.path.dirname(elf), 'm4-run_tool')
    os.makedirs(folder, exist_ok=True)
    numpy.ascontiguousarray(images, numpy.uint8).tofile(
        os.path.join(folder, 'images.u8'))
    run_tool(['qemu-system-arm', '-M', 'mps2-an386', '-cpu', 'cortex-m4',
         '-nographic', '-monitor', 'none', '-serial', 'none',
         '-semihosting-config', 'enable=on,target=native', '-kernel', elf],
        cwd=folder)
    return read_records(os.path.join(folder, 'records.bin'), classes,
                        len(images))


def build_wasm(directory, flags=('-O2',)):
    """The WebAssembly module of ``directory``'s model (``wasm.c``
    around it)."""
    model = compile_object(directory, ['clang'] + C_WASM,
                           list(flags) + C_CONTRACT, 'wasm_model.o')
    harness = os.path.join(directory, 'wasm_harness.o')
    run_tool(['clang'] + C_WASM + ['-std=c99', '-O2', '-I', directory, '-c',
                            os.path.join(C_HARNESSES, 'wasm.c'), '-o', harness])
    module = os.path.join(directory, 'model.wasm')
    run_tool(['clang'] + C_WASM + ['-nostdlib', '-Wl,--no-entry', harness, model,
                            '-o', module])
    return module


def run_wasm(module, images, classes):
    """Records of the module over ``images``, run_tool by node."""
    folder = os.path.dirname(module)
    images_path = os.path.join(folder, 'wasm.images')
    records_path = os.path.join(folder, 'wasm.records')
    numpy.ascontiguousarray(images, numpy.uint8).tofile(images_path)
    run_tool(['node', os.path.join(C_HARNESSES, 'run_wasm.js'), module, images_path,
         records_path])
    return read_records(records_path, classes, len(images))


def fused_instructions(objdump, path):
    """The fused multiply-add instructions in the object ``path``."""
    return C_FUSED.findall(run_tool([objdump, '-d', path]))


def contraction_probe(directory, compiler, flags, objdump):
    """Whether ``compiler`` with ``flags`` fuses ``a * b + c`` (so that a
    model compiled alike would, but for its guard)."""
    source = os.path.join(directory, 'fma_probe.c')
    with open(source, 'w') as f:
        f.write('float fma_probe(float a, float b, float c)\n'
                '{\n    return a * b + c;\n}\n')
    probe = os.path.join(directory, 'fma_probe.o')
    run_tool(compiler + flags + ['-c', source, '-o', probe])
    return bool(fused_instructions(objdump, probe))


def assert_bits_equal(records, expected, where):
    """The records' logits equal ``expected`` bit for bit, and their
    classes are its first largest logits."""
    got = records['logits']
    assert got.shape == expected.shape, where
    differ = numpy.flatnonzero((got.view(numpy.uint32) !=
                                expected.view(numpy.uint32)).any(axis=1))
    assert not len(differ), '{}: the logits of {} images differ, first ' \
        '{}'.format(where, len(differ), differ[:5])
    numpy.testing.assert_array_equal(records['label'], expected.argmax(axis=1),
                                     err_msg=where)


# --- hostile files and capped commands --------------------------------------
# Hostile files made on the spot, and commands run under a memory cap.
# 
# What an attacker would hand a user: packed networks with a valid checksum
# and a forged header (:func:`forge`), snapshots with a forged member
# (:func:`rewrite_npz`), gzip bombs (:func:`gzip_bomb`), and special files
# in place of inputs and outputs (:func:`special_file`). :func:`run_capped`
# runs a command of the repository as a child process with its address space
# capped and a timeout, and returns its exit status, output and peak
# resident memory.

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
    words = packed_bits.pack_bits(bits)
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


def geometry_network(rng):
    """Two convolutions with the optional geometry, on the pixels' levels
    0, 1, 2 (``input.pixel_thresholds``): 5x5 valid on the levels, 5x5
    with padding 1 on the signs, each pooled, then a dense XNOR output
    layer: 28x28 -> 24x24 -> 12x12 -> 10x10 -> 5x5 -> 10."""
    Layer = packed_format.Layer

    def conv(name, kind, in_shape, pad, out, spread):
        return Layer(name, kind, in_shape[0] * in_shape[1] * in_shape[2],
                     4 * out * out, 'sign',
                     random_bits(rng, (4, 25, 1), in_shape[0]),
                     conv={'in_shape': list(in_shape), 'channels': 4,
                           'pool': True, 'ksize': 5, 'pad': pad},
                     thresholds=_thresholds(rng, 4, spread=spread),
                     flipped=(rng.random(4) < 0.5).astype(numpy.uint8))
    return packed_format.PackedNetwork([
        conv('conv1', 'conv_pixels', (1, 28, 28), 0, 12, 6),
        conv('conv2', 'conv_xnor', (4, 12, 12), 1, 5, 30),
        Layer('fc1', 'xnor', 100, 10, 'affine',
              random_bits(rng, (10, 2), 100), **_affine(rng, 10)),
    ], dict(MNIST_INPUT, pixel_thresholds=[96, 160]), {'snapshot': 'forged'})


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


def split_packed(data):
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
    header, blobs = split_packed(data)
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


def word_convnet(rng, channels=(16, 64, 64), pools=(True, False, True),
                 units=(70,), ksize=3, pad=1):
    """A binarized ConvNet on 28x28 pixels whose last maps are whole words
    of channels (what one call runs, :func:`qnn.packed.forward.
    convnet_plan`): convolutions of ``channels`` (pixels, then signs),
    each pooled where ``pools`` says, some channels flipped, then dense
    XNOR layers of ``units`` and an output layer of 10."""
    Layer = packed_format.Layer
    layers = []
    shape = (1, 28, 28)
    for index, (C, pool) in enumerate(zip(channels, pools)):
        size = [packed_format.conv_size(n, ksize, pad) for n in shape[1:]]
        if pool:
            size = [packed_format.pooled(n, True) for n in size]
        layers.append(Layer(
            'conv{}'.format(index + 1),
            'conv_xnor' if index else 'conv_pixels', int(numpy.prod(shape)),
            C * size[0] * size[1], 'sign',
            random_bits(rng, (C, ksize * ksize, -(-shape[0] // 64)),
                        shape[0]),
            conv={'in_shape': list(shape), 'channels': C, 'pool': pool,
                  'ksize': ksize, 'pad': pad},
            thresholds=_thresholds(
                rng, C, spread=200 * ksize if index == 0 else shape[0]),
            flipped=(rng.random(C) < 0.3).astype(numpy.uint8)))
        shape = (C, size[0], size[1])
    sizes = (int(numpy.prod(shape)),) + tuple(units)
    for index, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(Layer(
            'fc{}'.format(index + 1), 'xnor', n_in, n_out, 'sign',
            random_bits(rng, (n_out, -(-n_in // 64)), n_in),
            thresholds=_thresholds(rng, n_out, spread=n_in // 8)))
    layers.append(Layer(
        'out', 'xnor', sizes[-1], 10, 'affine',
        random_bits(rng, (10, -(-sizes[-1] // 64)), sizes[-1]),
        **_affine(rng, 10)))
    return packed_format.PackedNetwork(layers, dict(MNIST_INPUT),
                                       {'snapshot': 'forged'})

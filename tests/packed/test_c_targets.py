"""``export.py --format c`` on networks trained here, compiled and run on
the four targets against ``inference.py --logits`` (the packed network's
logits, numba): bit for bit, with the compilers allowed to contract
float expressions to fused multiply-adds.

* x86-64: gcc (portable, and -march=native) and clang, every test image
  (1,000 for the 2-bit ConvNet, whose packed reference is slow);
* AArch64: gcc-aarch64-linux-gnu, static, under qemu-aarch64: 1,000;
* Cortex-M4: arm-none-eabi-gcc and newlib, -mcpu=cortex-m4 -mthumb -Os,
  on qemu-system-arm's mps2-an386 with semihosting: 100;
* WebAssembly: clang --target=wasm32 and wasm-ld, run by node: 1,000.

Also: clean compiles (-Wall -Wextra -Werror -pedantic, -O2 and -Os) with
each target's compiler, the stack a call takes, and the bad inputs of
``export.py --format c`` and ``inference.py --logits``. The toolchains come
from Debian (``make c-toolchains``, run by ``make test``); without one the
tests that need it skip, and fail when ``CI`` is ``true``.
"""
import errno
import os
import re
import subprocess
import sys

import numpy
import pytest

import export
import inference
from qnn.datasets import mnist
from qnn.packed import c_source
from qnn.packed import format as packed_format
from qnn.packed import forward as packed_forward
import train_mnist

import helpers

# the options of each network, and the test images its x86 check runs on
NETWORKS = {
    'mlp': (['--unit', '33'], 10000),
    'cnn': (['--arch', 'cnn'], 10000),
    'bits2': (['--unit', '33', '--weight-bits', '2', '--activation-bits',
               '2'], 10000),
    'cnn_bits2': (['--arch', 'cnn', '--weight-bits', '2',
                   '--activation-bits', '2'], 1000),
    'shift_bn': (['--unit', '33', '--bn', 'shift'], 10000),
}
AARCH64_IMAGES = 1000
M4_IMAGES = 100
WASM_IMAGES = 1000


class Trained(object):
    """A network trained here: its snapshot, packed file and network, C
    source directory, test images and ``inference.py --logits``."""


@pytest.fixture(scope='module')
def test_images():
    return mnist.load_raw()['test'][0]


@pytest.fixture(scope='module', params=sorted(NETWORKS))
def trained(request, tmp_path_factory, test_images):
    """The network after one epoch on 500 images, exported both ways, and
    its logits from inference.py."""
    options, images = NETWORKS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    out = str(folder / 'run')
    assert train_mnist.main(options + [
        '--epoch', '1', '--train-subset', '500', '--test-subset', '100',
        '--batchsize', '50', '--noplot', '--out', out]) == 0
    t = Trained()
    t.name = request.param
    t.snapshot = os.path.join(out, 'snapshot_iter_10')
    t.packed = str(folder / 'network.bnn')
    t.source = str(folder / 'c')
    assert export.main([t.snapshot, '-o', t.packed]) == 0
    assert export.main([t.snapshot, '--format', 'c', '-o', t.source]) == 0
    t.network = packed_format.load(t.packed)
    logits = str(folder / 'logits.npy')
    result = subprocess.run(
        [sys.executable, os.path.join(helpers.ROOT, 'inference.py'), t.packed,
         '--test-subset', str(images), '--logits', logits],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stderr
    t.logits = numpy.load(logits)
    t.images = test_images[:images]
    return t


def test_inference_writes_the_packed_logits(trained):
    assert trained.logits.dtype == numpy.float32
    assert trained.logits.shape == (len(trained.images), 10)
    expected = packed_forward.forward(trained.network, trained.images[:500],
                                      'numpy')
    assert trained.logits[:500].tobytes() == expected.tobytes()
    # trained: the test would see wrong logits
    assert len(numpy.unique(trained.logits.argmax(axis=1))) >= 5


def test_the_export_writes_the_three_files(trained):
    assert sorted(os.listdir(trained.source)) == sorted(c_source.FILES)
    with open(os.path.join(trained.source, 'qnn_model.h')) as f:
        header = f.read()
    assert '#define QNN_INPUT_SIZE 784\n' in header
    assert '#define QNN_CLASSES 10\n' in header


@pytest.mark.parametrize('compiler, flags', [
    ('gcc', ['-O2']),
    ('gcc', ['-O2', '-march=native'] + helpers.C_CONTRACT),
    ('clang', ['-O2', '-march=native'] + helpers.C_CONTRACT)])
def test_x86_64(trained, compiler, flags):
    helpers.require_tools(compiler)
    program = helpers.build_hosted(trained.source, [compiler], flags,
                                        'x86_' + compiler + flags[-1])
    records = helpers.run_hosted(program, trained.images, 10)
    helpers.assert_bits_equal(records, trained.logits,
                                   'x86-64 ' + compiler)


def test_aarch64(trained):
    helpers.require_tools('aarch64-linux-gnu-gcc', 'qemu-aarch64')
    program = helpers.build_hosted(
        trained.source, ['aarch64-linux-gnu-gcc'],
        ['-O2'] + helpers.C_CONTRACT, 'aarch64', link=['-static'])
    records = helpers.run_hosted(
        program, trained.images[:AARCH64_IMAGES], 10,
        runner=['qemu-aarch64'])
    helpers.assert_bits_equal(records, trained.logits[:AARCH64_IMAGES],
                                   'aarch64')


def test_cortex_m4(trained):
    helpers.require_tools('arm-none-eabi-gcc', 'arm-none-eabi-size', 'qemu-system-arm')
    elf, model = helpers.build_cortex_m4(trained.source)
    records = helpers.run_cortex_m4(elf, trained.images[:M4_IMAGES], 10)
    helpers.assert_bits_equal(records, trained.logits[:M4_IMAGES],
                                   'cortex-m4')
    # the model: code and constants in flash, nothing in RAM but the
    # scratch passed in (the program's .bss) and the stack
    sizes = helpers.sizes('arm-none-eabi-size', model)
    layers = c_source.plan(trained.network)
    assert sizes['data'] == sizes['bss'] == 0
    assert sizes['text'] >= c_source.constant_bytes(layers)
    program = helpers.sizes('arm-none-eabi-size', elf)
    assert program['bss'] >= 8 * sum(c_source.scratch_plan(layers))


def test_webassembly(trained):
    helpers.require_tools('clang', 'wasm-ld', 'node')
    module = helpers.build_wasm(trained.source)
    records = helpers.run_wasm(module, trained.images[:WASM_IMAGES], 10)
    helpers.assert_bits_equal(records, trained.logits[:WASM_IMAGES],
                                   'wasm32')


@pytest.mark.parametrize('target', sorted(helpers.C_COMPILERS))
def test_compiles_cleanly(trained, target):
    compiler = helpers.C_COMPILERS[target]
    helpers.require_tools(compiler[0])
    for level in ('-O2', '-Os'):
        helpers.compile_object(trained.source, compiler, [level],
                                    'clean.o')


# the targets whose compilers can fuse: the compiler and flags of the run,
# and the objdump that reads its objects
FUSING = {
    'x86-64': (['gcc'], ['-O2', '-march=native'], 'objdump'),
    'aarch64': (['aarch64-linux-gnu-gcc'], ['-O2'],
                'aarch64-linux-gnu-objdump'),
    'cortex-m4': (['arm-none-eabi-gcc'] + helpers.C_M4, ['-Os'],
                  'arm-none-eabi-objdump'),
}


def cpu_has_fma():
    try:
        with open('/proc/cpuinfo') as f:
            return bool(re.search(r'^flags\s*:.*\bfma\b', f.read(), re.M))
    except OSError:
        return False


@pytest.mark.parametrize('target', sorted(FUSING))
def test_no_fused_multiply_add_where_the_compiler_fuses(trained, target,
                                                        tmp_path):
    """With these flags the compiler fuses ``a * b + c`` (the probe), yet
    the model's object has no fused instruction: its logits are the
    separately rounded float32 operations (the runs above compare them)."""
    compiler, flags, objdump = FUSING[target]
    helpers.require_tools(compiler[0], objdump)
    if target == 'x86-64' and not cpu_has_fma():
        pytest.skip('this CPU has no FMA: -march=native does not fuse')
    flags = flags + helpers.C_CONTRACT
    assert helpers.contraction_probe(str(tmp_path), compiler, flags,
                                          objdump)
    model = helpers.compile_object(trained.source, compiler, flags,
                                        'fused.o')
    assert not helpers.fused_instructions(objdump, model)


@pytest.mark.parametrize('target', ['x86-64', 'cortex-m4'])
def test_stack_is_within_the_readme(trained, target):
    """-fstack-usage: qnn_predict's frame (with its scratch) and the
    deepest calls below it stay within the scratch and the bound the
    README states."""
    compiler = FUSING[target][0]
    helpers.require_tools(compiler[0])
    directory = trained.source
    helpers.compile_object(directory, compiler, [
        '-O2' if target == 'x86-64' else '-Os', '-fstack-usage'],
        target + '.o')
    frames = {}
    with open(os.path.join(directory, target + '.su')) as f:
        for line in f:
            name, size, kind = line.rsplit(None, 2)
            assert kind == 'static', line
            frames[name.rsplit(':', 1)[1]] = int(size)
    layers = c_source.plan(trained.network)
    others = [size for name, size in frames.items()
              if name not in ('qnn_predict', 'qnn_predict_scratch')]
    # qnn_predict, then qnn_predict_scratch, then its deepest chain below
    # it (at most two more frames: a layer and the function it calls)
    used = frames['qnn_predict'] + frames.get('qnn_predict_scratch', 0) + \
        sum(sorted(others)[-2:])
    scratch = 8 * sum(c_source.scratch_plan(layers))
    assert used <= scratch + c_source.stack_bytes(layers), frames
    with open(os.path.join(trained.source, 'README.md')) as f:
        assert 'less than\n{} bytes more'.format(
            c_source.stack_bytes(layers)) in f.read()


# --- bad input --------------------------------------------------------------

def run_export(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        export.main(list(argv))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def assert_one_line(code, err, status, *words):
    assert code == status
    assert err.count('\n') == 1 and 'Traceback' not in err, err
    for word in words:
        assert word in err, err


@pytest.fixture(scope='module')
def mlp(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('mlp'))
    assert train_mnist.main([
        '--unit', '33', '--epoch', '1', '--train-subset', '200',
        '--test-subset', '50', '--batchsize', '50', '--noplot', '--out',
        out]) == 0
    return os.path.join(out, 'snapshot_iter_4')


def test_default_output_and_an_empty_directory(mlp, tmp_path, capsys):
    assert export.main([mlp, '--format', 'c']) == 0
    assert sorted(os.listdir(mlp + '_c')) == sorted(c_source.FILES)
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert export.main([mlp, '--format', 'c', '-o', str(empty)]) == 0
    assert sorted(os.listdir(str(empty))) == sorted(c_source.FILES)
    assert 'qnn_model.c' in capsys.readouterr()[0]


def test_an_existing_output_is_left_alone(mlp, tmp_path, capsys):
    full = tmp_path / 'full'
    full.mkdir()
    (full / 'mine.txt').write_text('keep')
    a_file = tmp_path / 'file'
    a_file.write_text('keep')
    for output in (full, a_file):
        code, out, err = run_export(capsys, mlp, '--format', 'c', '-o',
                                    str(output))
        assert_one_line(code, err, 1, str(output))
    assert os.listdir(str(full)) == ['mine.txt']
    assert a_file.read_text() == 'keep'
    assert sorted(os.listdir(str(tmp_path))) == ['file', 'full']


@pytest.mark.parametrize('where', ['missing/c', 'file/c'])
def test_unwritable_output(mlp, tmp_path, capsys, where):
    (tmp_path / 'file').write_text('')
    output = str(tmp_path / where)
    code, out, err = run_export(capsys, mlp, '--format', 'c', '-o', output)
    assert_one_line(code, err, 1, output)
    assert sorted(os.listdir(str(tmp_path))) == ['file']


def test_a_failed_write_leaves_nothing(mlp, tmp_path, capsys, monkeypatch):
    calls = []

    def full_disk(fd):
        calls.append(fd)
        if len(calls) == 2:  # the second file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, 'fsync', full_disk)
    output = str(tmp_path / 'c')
    code, out, err = run_export(capsys, mlp, '--format', 'c', '-o', output)
    assert_one_line(code, err, 1, output, os.strerror(errno.ENOSPC))
    assert os.listdir(str(tmp_path)) == []


def test_an_unsupported_network_is_refused(mlp, tmp_path, capsys,
                                           monkeypatch):
    """A layer kind the C source does not compute (a kind of a later
    format): one line, no directory."""
    network = export.load(mlp)
    network.layers[1].kind = 'wage'
    monkeypatch.setattr(export, 'load', lambda snapshot: network)
    output = str(tmp_path / 'c')
    code, out, err = run_export(capsys, mlp, '--format', 'c', '-o', output)
    assert_one_line(code, err, 1, mlp, "kind 'wage'", 'cannot export it to C')
    assert os.listdir(str(tmp_path)) == []


def test_an_unknown_format_exits_2(mlp, capsys):
    code, out, err = run_export(capsys, mlp, '--format', 'fortran')
    assert code == 2 and 'invalid choice' in err


def run_inference(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        inference.main(list(argv))
    return e.value.code, capsys.readouterr()[1]


def test_inference_logits_errors(mlp, tmp_path, capsys):
    # a --logits over the packed file, or over --predictions, is refused
    packed = str(tmp_path / 'n.bnn')
    assert export.main([mlp, '-o', packed]) == 0
    capsys.readouterr()
    code, err = run_inference(capsys, packed, '--test-subset', '10',
                              '--logits', str(tmp_path / 'no' / 'l.npy'))
    assert_one_line(code, err, 1, str(tmp_path / 'no' / 'l.npy'))
    code, err = run_inference(capsys, packed, '--logits', packed)
    assert_one_line(code, err, 1, 'which this command reads')
    code, err = run_inference(capsys, packed, '--logits', str(tmp_path / 'x'),
                              '--predictions', str(tmp_path / 'x'))
    assert code == 2 and '--logits' in err
    assert packed_format.load(packed).layers  # not replaced
    assert sorted(os.listdir(str(tmp_path))) == ['n.bnn']

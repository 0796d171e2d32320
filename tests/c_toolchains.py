"""Builds and runs the C source of :mod:`qnn.packed.c_source` on the
targets the tests check, with Debian's toolchains (``make c-toolchains``
installs them):

* x86-64: gcc and clang, ``tests/c/run_images.c`` reading a file of
  images;
* AArch64: gcc-aarch64-linux-gnu, the same program linked statically and
  run by qemu-user's ``qemu-aarch64``;
* Cortex-M4: gcc-arm-none-eabi with newlib, ``tests/c/cortex_m4.c`` (its
  own start-up code, images read over semihosting) on qemu-system-arm's
  ``mps2-an386`` board;
* WebAssembly: clang ``--target=wasm32`` and lld, ``tests/c/wasm.c``, run
  by node with ``tests/c/run_wasm.js``.

Each run writes records of the logits (float32) and the returned class
(int32) per image. A test that needs a missing tool skips, and fails when
``CI`` is ``true``.
"""
import os
import re
import shutil
import subprocess

import numpy
import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'c')
# the tool -> the Debian package that has it
PACKAGES = {
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
STRICT = ['-std=c99', '-Wall', '-Wextra', '-Werror', '-pedantic']
# contraction to fused multiply-adds allowed: the logits must not change
CONTRACT = ['-ffp-contract=fast']
M4 = ['-mcpu=cortex-m4', '-mthumb', '-mfloat-abi=hard',
      '-mfpu=fpv4-sp-d16']
WASM = ['--target=wasm32']
# the compilers of each target, for the clean compiles
COMPILERS = {
    'x86-64 gcc': ['gcc'], 'x86-64 clang': ['clang'],
    'aarch64 gcc': ['aarch64-linux-gnu-gcc'],
    'cortex-m4 gcc': ['arm-none-eabi-gcc'] + M4,
    'wasm32 clang': ['clang'] + WASM,
}
# instructions that fuse a multiplication and an addition
FUSED = re.compile(r'\b(v?fn?m(add|sub)\w*|fmla|fmls|vfn?m[as]\.f32)\b')
TIMEOUT = 600


def require(*tools):
    """Skips the test unless every tool is on ``PATH``; fails instead when
    ``CI`` is ``true`` (``make test`` installs them)."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    packages = sorted({PACKAGES.get(tool, tool) for tool in missing})
    message = '{} not found (Debian: {}); run `make c-toolchains`'.format(
        ', '.join(missing), ' '.join(packages))
    if os.environ.get('CI', '').lower() == 'true':
        pytest.fail('CI must run the C targets\' tests, but ' + message,
                    pytrace=False)
    pytest.skip(message)


def write_model(directory, files):
    os.makedirs(str(directory), exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(str(directory), name), 'w') as f:
            f.write(text)
    return str(directory)


def run(command, cwd=None, timeout=TIMEOUT):
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
    run(compiler + STRICT + flags + ['-c', 'qnn_model.c', '-o', path],
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
    run(compiler + ['-std=c99', '-O2', '-I', directory] + list(link) + [
        os.path.join(HERE, 'run_images.c'), model, '-o', program])
    return program


def run_hosted(program, images, classes, runner=()):
    """Records of ``program`` (a ``run_images``) over ``images``, run
    directly or by ``runner`` (``['qemu-aarch64']``)."""
    folder = os.path.dirname(program)
    name = os.path.basename(program)
    images_path = os.path.join(folder, name + '.images')
    records_path = os.path.join(folder, name + '.records')
    numpy.ascontiguousarray(images, numpy.uint8).tofile(images_path)
    run(list(runner) + [program, images_path, records_path])
    return read_records(records_path, classes, len(images))


def build_cortex_m4(directory, flags=('-Os',)):
    """The Cortex-M4 program of ``directory``'s model: ``(ELF path, path
    of the model's object)``."""
    sections = ['-ffunction-sections', '-fdata-sections']
    model = compile_object(directory, ['arm-none-eabi-gcc'] + M4,
                           list(flags) + CONTRACT + sections, 'm4_model.o')
    harness = os.path.join(directory, 'm4_harness.o')
    run(['arm-none-eabi-gcc'] + M4 + ['-std=gnu99', '-Os', '-Wall',
                                      '-Wextra', '-Werror'] + sections + [
        '-I', directory, '-c', os.path.join(HERE, 'cortex_m4.c'), '-o',
        harness])
    elf = os.path.join(directory, 'm4.elf')
    run(['arm-none-eabi-gcc'] + M4 + [
        '--specs=nano.specs', '-nostartfiles', '-Wl,--gc-sections', '-T',
        os.path.join(HERE, 'cortex_m4.ld'), harness, model, '-o', elf])
    return elf, model


def sizes(size_tool, path):
    """``{'text': ..., 'data': ..., 'bss': ...}`` of ``size`` (Berkeley
    format) for the file ``path``."""
    lines = run([size_tool, path]).strip().splitlines()
    text, data, bss = (int(v) for v in lines[-1].split()[:3])
    return {'text': text, 'data': data, 'bss': bss}


def run_cortex_m4(elf, images, classes):
    """Records of the Cortex-M4 program over ``images`` under
    qemu-system-arm (mps2-an386, semihosting)."""
    folder = os.path.join(os.path.dirname(elf), 'm4-run')
    os.makedirs(folder, exist_ok=True)
    numpy.ascontiguousarray(images, numpy.uint8).tofile(
        os.path.join(folder, 'images.u8'))
    run(['qemu-system-arm', '-M', 'mps2-an386', '-cpu', 'cortex-m4',
         '-nographic', '-monitor', 'none', '-serial', 'none',
         '-semihosting-config', 'enable=on,target=native', '-kernel', elf],
        cwd=folder)
    return read_records(os.path.join(folder, 'records.bin'), classes,
                        len(images))


def build_wasm(directory, flags=('-O2',)):
    """The WebAssembly module of ``directory``'s model (``wasm.c``
    around it)."""
    model = compile_object(directory, ['clang'] + WASM,
                           list(flags) + CONTRACT, 'wasm_model.o')
    harness = os.path.join(directory, 'wasm_harness.o')
    run(['clang'] + WASM + ['-std=c99', '-O2', '-I', directory, '-c',
                            os.path.join(HERE, 'wasm.c'), '-o', harness])
    module = os.path.join(directory, 'model.wasm')
    run(['clang'] + WASM + ['-nostdlib', '-Wl,--no-entry', harness, model,
                            '-o', module])
    return module


def run_wasm(module, images, classes):
    """Records of the module over ``images``, run by node."""
    folder = os.path.dirname(module)
    images_path = os.path.join(folder, 'wasm.images')
    records_path = os.path.join(folder, 'wasm.records')
    numpy.ascontiguousarray(images, numpy.uint8).tofile(images_path)
    run(['node', os.path.join(HERE, 'run_wasm.js'), module, images_path,
         records_path])
    return read_records(records_path, classes, len(images))


def fused_instructions(objdump, path):
    """The fused multiply-add instructions in the object ``path``."""
    return FUSED.findall(run([objdump, '-d', path]))


def contraction_probe(directory, compiler, flags, objdump):
    """Whether ``compiler`` with ``flags`` fuses ``a * b + c`` (so that a
    model compiled alike would, but for its guard)."""
    source = os.path.join(directory, 'fma_probe.c')
    with open(source, 'w') as f:
        f.write('float fma_probe(float a, float b, float c)\n'
                '{\n    return a * b + c;\n}\n')
    probe = os.path.join(directory, 'fma_probe.o')
    run(compiler + flags + ['-c', source, '-o', probe])
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

#!/usr/bin/env python
"""The C source of export.py --format c against the packed network's
kernels and onnxruntime: speed on this machine, memory on each target.

For each snapshot (its config.json beside it) it folds the network as
export.py does, writes its C source and measures, on the test images of
the network's data set:

* images/s of the C model compiled with gcc for this CPU (``-O2
  -march=native``) and portably (``-O2``), one image after another on one
  core, timed inside a small C driver (``DRIVER`` below) that runs every
  image ``--rounds`` times; of inference.py's numba kernels (batches of
  ``--batchsize``, all numba threads, and one thread); of onnxruntime on
  the same network's ONNX graph (as many threads as numba; none for k-bit
  convolutions, which the ONNX export refuses); the engines alternate,
  round by round, in one run, and each figure is the median of its
  rounds. Also the number of images whose C logits equal numba's bit for
  bit;
* the memory the model takes on each target whose compiler is here: its
  code and constants (``size`` of the object: flash on a microcontroller;
  for WebAssembly the linked module's bytes), its RAM (the scratch
  ``QNN_SCRATCH_BYTES`` and the stack of a call, from gcc's
  ``-fstack-usage``; for WebAssembly the bound its README states), and
  whether a Cortex-M4 part of 256 KB of flash and 64 KB of RAM holds it.

    .venv/bin/python bench/c_inference.py result/snapshot_iter_12000 ...

A benchmark, not a test: it asserts nothing. The machines drift; only the
ratios of one run mean much.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from qnn.backends import inference_threads  # NOQA: E402
inference_threads.configure()  # before NumPy and numba start

import numpy  # NOQA: E402

import export  # NOQA: E402
from qnn import datasets  # NOQA: E402
from qnn.packed import c_source  # NOQA: E402
from qnn.packed import forward as packed_forward  # NOQA: E402
from qnn.packed import model  # NOQA: E402

DRIVER = r'''#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "qnn_model.h"

/* c_driver IMAGES N ROUNDS LOGITS: runs qnn_predict over the N images
   ROUNDS times, prints the seconds of each round, writes the logits of
   the last to LOGITS (float32, N x QNN_CLASSES) */
int main(int argc, char **argv)
{
    long n, i, round, rounds;
    uint8_t *images;
    float *logits;
    FILE *f;
    if (argc != 5)
        return 2;
    n = atol(argv[2]);
    rounds = atol(argv[3]);
    images = malloc((size_t)n * QNN_INPUT_SIZE);
    logits = malloc((size_t)n * QNN_CLASSES * sizeof(float));
    f = fopen(argv[1], "rb");
    if (!images || !logits || !f ||
            fread(images, QNN_INPUT_SIZE, (size_t)n, f) != (size_t)n)
        return 1;
    fclose(f);
    for (round = 0; round < rounds; ++round) {
        struct timespec start, end;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (i = 0; i < n; ++i)
            qnn_predict(images + i * QNN_INPUT_SIZE,
                        logits + i * QNN_CLASSES);
        clock_gettime(CLOCK_MONOTONIC, &end);
        printf("%.9f\n", (double)(end.tv_sec - start.tv_sec)
               + 1e-9 * (double)(end.tv_nsec - start.tv_nsec));
    }
    f = fopen(argv[4], "wb");
    if (!f || fwrite(logits, sizeof(float) * QNN_CLASSES, (size_t)n, f)
            != (size_t)n)
        return 1;
    return fclose(f) != 0;
}
'''
# the C builds timed: name -> gcc options
BUILDS = (('C, gcc -O2 -march=native', ['-O2', '-march=native']),
          ('C, gcc -O2', ['-O2']))
STRICT = ['-std=c99', '-Wall', '-Wextra', '-Werror', '-pedantic',
          '-ffp-contract=off']
M4 = ['-mcpu=cortex-m4', '-mthumb', '-mfloat-abi=hard', '-mfpu=fpv4-sp-d16']
# the memory of each target: (compiler, options, size tool or None for the
# linked WebAssembly module)
TARGETS = (
    ('x86-64', ['gcc', '-O2'], 'size'),
    ('aarch64', ['aarch64-linux-gnu-gcc', '-O2'], 'aarch64-linux-gnu-size'),
    ('cortex-m4', ['arm-none-eabi-gcc'] + M4 + ['-Os'], 'arm-none-eabi-size'),
    ('wasm32', ['clang', '--target=wasm32', '-O2'], None),
)
FLASH, RAM = 256 * 1024, 64 * 1024


def run(command, cwd=None):
    return subprocess.run(command, cwd=cwd, check=True,
                          stdout=subprocess.PIPE,
                          universal_newlines=True).stdout


def c_engine(folder, name, flags, images):
    """A function running the C driver's rounds (their seconds), and the
    logits of its last run."""
    program = os.path.join(folder, name)
    run(['gcc'] + STRICT + flags + ['-I', folder, '-o', program,
                                    os.path.join(folder, 'qnn_model.c'),
                                    os.path.join(folder, 'c_driver.c')])
    pixels = os.path.join(folder, 'images.u8')
    logits = program + '.logits'

    def rounds(count):
        text = run([program, pixels, str(len(images)), str(count), logits])
        return [float(v) for v in text.split()]
    return rounds, lambda: numpy.fromfile(logits, numpy.float32).reshape(
        len(images), -1)


def python_engine(function, images, batchsize):
    def rounds(count):
        seconds = []
        for _ in range(count):
            start = time.perf_counter()
            for lo in range(0, len(images), batchsize):
                function(images[lo:lo + batchsize])
            seconds.append(time.perf_counter() - start)
        return seconds
    return rounds


def onnx_session(network, threads):
    """onnxruntime on the network's ONNX graph, or None where the export
    refuses it (k-bit convolutions) or onnxruntime is missing."""
    try:
        import onnxruntime
        from qnn.packed import onnx_export
        graph = onnx_export.to_onnx(network)
    except ImportError:
        return None
    except onnx_export.UnsupportedLayer:
        return None
    settings = onnxruntime.SessionOptions()
    settings.intra_op_num_threads = threads
    settings.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        graph.SerializeToString(), settings,
        providers=['CPUExecutionProvider'])


def speeds(network, folder, images, options):
    """images/s of each engine, alternating rounds, and how many images
    have C logits equal to numba's."""
    import numba
    threads = numba.get_num_threads()
    engines = []
    outputs = []
    for name, flags in BUILDS:
        rounds, logits = c_engine(folder, 'driver{}'.format(len(engines)),
                                  flags, images)
        engines.append((name, rounds))
        outputs.append(logits)

    def numba_logits(batch):
        return packed_forward.forward(network, batch, 'numba')

    def one_thread(count):
        numba.set_num_threads(1)
        try:
            return python_engine(numba_logits, images, options.batchsize)(
                count)
        finally:
            numba.set_num_threads(threads)
    engines.append(('numba, {} threads'.format(threads), python_engine(
        numba_logits, images, options.batchsize)))
    engines.append(('numba, 1 thread', one_thread))
    session = onnx_session(network, threads)
    if session is not None:
        engines.append(('onnxruntime, {} threads'.format(threads),
                        python_engine(lambda b: session.run(None, {
                            'pixels': b}), images, options.batchsize)))
    packed_forward.warm_up(network.layers, images)
    seconds = {name: [] for name, _ in engines}
    for _ in range(options.rounds):
        for name, rounds in engines:
            seconds[name] += rounds(1)
    reference = numba_logits(images)
    equal = [int((logits().view(numpy.uint32) == reference.view(
        numpy.uint32)).all(axis=1).sum()) for logits in outputs]
    return {name: len(images) / statistics.median(v)
            for name, v in seconds.items()}, equal


def stack_of(folder, compiler, obj):
    """The stack of a call besides... all of it: qnn_predict's frame and
    the two deepest below it (gcc's -fstack-usage), as the tests count
    it."""
    frames = {}
    with open(obj[:-2] + '.su') as f:
        for line in f:
            name, size, _ = line.rsplit(None, 2)
            frames[name.rsplit(':', 1)[1]] = int(size)
    others = sorted(size for name, size in frames.items()
                    if name not in ('qnn_predict', 'qnn_predict_scratch'))
    return frames['qnn_predict_scratch'] + sum(others[-2:]) if \
        'qnn_predict_scratch' in frames else sum(others[-2:])


def memory(folder, layers):
    """``{target: (code and constants, RAM)}`` in bytes, for the targets
    whose tools are here."""
    scratch = 8 * sum(c_source.scratch_plan(layers))
    result = {}
    for target, compiler, size_tool in TARGETS:
        tools = [compiler[0]] + ([size_tool] if size_tool else ['wasm-ld'])
        if not all(shutil.which(tool) for tool in tools):
            continue
        obj = os.path.join(folder, target + '.o')
        run(compiler + STRICT + ['-c', 'qnn_model.c', '-o', obj] + (
            ['-fstack-usage'] if size_tool else []), cwd=folder)
        if size_tool is None:
            module = os.path.join(folder, target + '.wasm')
            run(compiler[:2] + ['-nostdlib', '-Wl,--no-entry',
                                '-Wl,--export=qnn_predict',
                                '-Wl,--allow-undefined', obj, '-o', module])
            result[target] = (os.path.getsize(module),
                              scratch + c_source.stack_bytes(layers))
            continue
        text, data, bss = (int(v) for v in run(
            [size_tool, obj]).splitlines()[-1].split()[:3])
        result[target] = (text + data, scratch + data + bss + stack_of(
            folder, compiler, obj))
    return result


def measure(snapshot, options):
    network = export.load(snapshot)
    run_options = export.read_options(snapshot)[0]
    images = datasets.load_raw(network.input['dataset'],
                               options.data_dir)['test'][0]
    images = numpy.ascontiguousarray(images[:options.images])
    with tempfile.TemporaryDirectory() as folder:
        for name, text in c_source.generate(network).items():
            with open(os.path.join(folder, name), 'w') as f:
                f.write(text)
        with open(os.path.join(folder, 'c_driver.c'), 'w') as f:
            f.write(DRIVER)
        images.tofile(os.path.join(folder, 'images.u8'))
        layers = c_source.plan(network)
        sizes = memory(folder, layers)
        rates, equal = speeds(network, folder, images, options) if \
            options.rounds else ({}, [])
    return {'network': model.describe(run_options), 'images': len(images),
            'rates': rates, 'equal': equal, 'memory': sizes,
            'constants': c_source.constant_bytes(layers)}


def report(results, options):
    if options.rounds:
        names = []
        for r in results:
            names += [n for n in r['rates'] if n not in names]
        print('images/s, median of {} rounds alternating; C: one image '
              'at a time, one core; numba and onnxruntime: batches of '
              '{}\n'.format(options.rounds, options.batchsize))
        print('| network | images | {} | C logits = numba\'s |'.format(
            ' | '.join(names)))
        print('|---|---:|' + '---:|' * (len(names) + 1))
        for r in results:
            print('| {} | {} | {} | {} |'.format(
                r['network'], r['images'], ' | '.join(
                    '{:.0f}'.format(r['rates'][n]) if n in r['rates']
                    else '-' for n in names),
                ', '.join(str(e) for e in r['equal'])))
        print()
    targets = [t for t, _, _ in TARGETS]
    print('memory, bytes: code and constants / RAM (scratch and stack); '
          'wasm32: the module / RAM')
    print('| network | constants | {} | fits 256 KB flash, 64 KB RAM '
          '(Cortex-M4) |'.format(' | '.join(targets)))
    print('|---|---:|' + '---:|' * len(targets) + '---|')
    for r in results:
        cells = ['{} / {}'.format(*r['memory'][t]) if t in r['memory']
                 else '-' for t in targets]
        m4 = r['memory'].get('cortex-m4')
        fits = '-' if m4 is None else 'yes' if m4[0] <= FLASH and \
            m4[1] <= RAM else 'no'
        print('| {} | {} | {} | {} |'.format(r['network'], r['constants'],
                                             ' | '.join(cells), fits))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('snapshots', nargs='+', metavar='SNAPSHOT')
    parser.add_argument('--data-dir', default=None)
    parser.add_argument('--images', type=int, default=10000,
                        help='test images (default: all, 10000)')
    parser.add_argument('--batchsize', type=int, default=1000)
    parser.add_argument('--rounds', type=int, default=5,
                        help='timed rounds of each engine (0: memory only)')
    options = parser.parse_args(argv)
    if shutil.which('gcc') is None:
        sys.exit('bench/c_inference.py: needs gcc (make c-toolchains)')
    results = []
    for snapshot in options.snapshots:
        try:
            results.append(measure(snapshot, options))
        except (export.ExportError, datasets.DatasetError) as e:
            sys.exit('{}: {}'.format(snapshot, e))
    report(results, options)
    return 0


if __name__ == '__main__':
    sys.exit(main())

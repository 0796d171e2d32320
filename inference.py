#!/usr/bin/env python
"""Run a packed binarized network (export.py's file) on the MNIST test set.

XNOR/AND and popcount on packed 64-bit words (:mod:`qnn.packed.kernels`): on
the CPU with numba on all cores (``--kernel numpy``: the NumPy reference),
on a GPU with CuPy RawKernels (``--device 0``). Prints one line,

    accuracy: 0.9824 (10000 images, 0.052 s, 192000 images/s)

the time being that of the forward passes alone (from the uint8 pixels to
the logits, after one untimed pass over two images that compiles the
kernels). Needs NumPy (and numba, or CuPy); not Chainer.

    .venv/bin/python inference.py mlp.bnn
    .venv/bin/python inference.py mlp.bnn --summary
"""
import argparse
import sys
import time

from qnn.utils import environment_check
environment_check.require('inference.py', ('numpy',))

import numpy  # NOQA: E402

from qnn.datasets import mnist
from qnn.packed import format as packed_format
from qnn.packed import kernels as packed_kernels
from qnn.packed import summary as packed_summary
from qnn.training import option_types
from qnn.utils import errors
from qnn.utils.errors import fail





def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('file', metavar='FILE', help='packed network file')
    parser.add_argument('--device', '-d', default='-1',
                        help='-1 or @numpy: CPU; N or @cupy:N: GPU N')
    parser.add_argument('--kernel', choices=('numba', 'numpy'),
                        default='numba', help='CPU kernels')
    parser.add_argument('--data-dir', default=None,
                        help='directory with the MNIST IDX files (default: '
                        'the repository copy)')
    parser.add_argument('--test-subset', type=option_types.positive_int, default=None,
                        metavar='N', help='the first N test images only')
    parser.add_argument('--batchsize', '-b', type=option_types.positive_int,
                        default=1000, help='images per forward pass')
    parser.add_argument('--summary', action='store_true',
                        help='print the model summary instead of running')
    args = parser.parse_args(argv)
    args.backend, args.gpu = backend_of(args.device, args.kernel, parser)
    return args


def backend_of(spec, kernel, parser):
    """``(backend, gpu id or None)`` of a ``--device`` spec."""
    spec = spec.strip()
    if spec in ('-1', '@numpy', 'cpu'):
        return kernel, None
    text = spec[len('@cupy:'):] if spec.startswith('@cupy:') else spec
    try:
        gpu = int(text)
    except ValueError:
        parser.error('--device {!r}: use -1 (CPU) or a GPU number'.format(
            spec))
    if gpu < 0:
        parser.error('--device {!r}: use -1 (CPU) or a GPU number'.format(
            spec))
    return 'cupy', gpu


def load_test(data_dir, subset):
    try:
        images, labels = mnist.load_raw(data_dir)['test']
    except mnist.MnistDataError as e:
        fail(e)
    if subset is not None:
        images, labels = images[:subset], labels[:subset]
    return images, labels


def predict(network, images, batchsize, backend):
    """Class predictions and the seconds of the forward passes."""
    xp = numpy
    if backend == 'cupy':
        import cupy as xp
    predictions = []
    seconds = 0.0
    for lo in range(0, len(images), batchsize):
        batch = images[lo:lo + batchsize]
        if backend == 'cupy':
            batch = xp.asarray(batch)
            xp.cuda.Device().synchronize()
        start = time.perf_counter()
        logits = packed_kernels.forward(network, batch, backend)
        y = logits.argmax(axis=1)
        if backend == 'cupy':
            xp.cuda.Device().synchronize()
        seconds += time.perf_counter() - start
        predictions.append(xp.asnumpy(y) if backend == 'cupy' else y)
    return numpy.concatenate(predictions), seconds


def use_gpu(gpu):
    try:
        import cupy
        cupy.cuda.Device(gpu).use()
        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # ImportError, CUDARuntimeError, ...
        fail('--device {}: no usable CUDA device ({}: {})'.format(
            gpu, type(e).__name__, e))


def main(argv=None):
    errors.program = 'inference.py'
    args = parse_args(argv)
    try:
        network = packed_format.load(args.file)
    except packed_format.PackedFileError as e:
        fail('{}: {}'.format(args.file, e))
    if args.summary:
        print(packed_summary.summary(network))
        return 0
    if network.input['size'] != 784:
        fail('{}: takes {} inputs, not MNIST\'s 784'.format(
            args.file, network.input['size']))
    images, labels = load_test(args.data_dir, args.test_subset)
    if args.gpu is not None:
        use_gpu(args.gpu)
    packed_kernels.warm_up(network.layers, images, args.backend)
    predictions, seconds = predict(network, images, args.batchsize,
                                   args.backend)
    accuracy = float((predictions == labels).mean())
    print('accuracy: {:.4f} ({} images, {:.3f} s, {:.0f} images/s)'.format(
        accuracy, len(images), seconds, len(images) / seconds))
    return 0


if __name__ == '__main__':
    sys.exit(main())

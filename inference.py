#!/usr/bin/env python
"""Run a packed binarized network (export.py's file) on its test set.

XNOR/AND and popcount on packed 64-bit words (:mod:`qnn.packed.forward`):
on the CPU with numba on all cores (``--kernel numpy``: the NumPy
reference), on a GPU with CuPy RawKernels (``--device 0``; not the k-bit
layers). The test set is the one the file was
trained on (recorded in it; ``--dataset`` to choose another of the same
image shape). Prints one line,

    accuracy: 0.9824 (10000 images, 0.052 s, 192000 images/s)

the time being that of the forward passes alone (from the uint8 pixels to
the logits, after one untimed pass over two images that compiles the
kernels); ``--predictions FILE`` also writes one predicted class per line,
in test-set order, and ``--logits FILE`` the logits, a float32 ``.npy``
array of images x classes (what ``export.py --format c``'s source must
equal bit for bit).

    .venv/bin/python inference.py mlp.bnn
    .venv/bin/python inference.py cnn.bnn --predictions predictions.txt
    .venv/bin/python inference.py cnn.bnn --logits logits.npy
    .venv/bin/python inference.py mlp.bnn --summary
"""
import argparse
import os
import sys
import time

from qnn.utils import environment_check
environment_check.require('inference.py')
from qnn.backends import inference_threads  # NOQA: E402
inference_threads.configure()  # before NumPy and numba start

import numpy  # NOQA: E402

from qnn import datasets
from qnn.backends import devices
from qnn.packed import format as packed_format
from qnn.packed import forward as packed_forward
from qnn.packed import summary as packed_summary
from qnn.training import option_types
from qnn.utils import atomic_files
from qnn.utils import errors
from qnn.utils.errors import fail


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('file', metavar='FILE', help='packed network file')
    parser.add_argument('--device', '-d', default='-1',
                        help='-1 or @numpy: CPU; N or @cupy:N: GPU N')
    parser.add_argument('--kernel', choices=('numba', 'numpy'),
                        default='numba', help='CPU kernels')
    parser.add_argument('--dataset', choices=datasets.NAMES, default=None,
                        help='the test set (default: the one the file was '
                        'trained on, MNIST for files that do not say)')
    parser.add_argument('--data-dir', default=None,
                        help='directory with the data set\'s files '
                        '(default: MNIST: the repository copy; '
                        'Fashion-MNIST: Debian\'s; docs/data.md)')
    parser.add_argument('--test-subset', type=option_types.positive_int,
                        default=None, metavar='N',
                        help='the first N test images only')
    parser.add_argument('--predictions', metavar='FILE', default=None,
                        help='write the predicted class of each test image '
                        'to FILE, one per line, in test-set order')
    parser.add_argument('--logits', metavar='FILE', default=None,
                        help='write the logits of the test images to FILE, '
                        'a float32 .npy array of images x classes, in '
                        'test-set order')
    parser.add_argument('--batchsize', '-b', type=option_types.positive_int,
                        default=1000, help='images per forward pass')
    parser.add_argument('--summary', action='store_true',
                        help='print the model summary instead of running')
    args = parser.parse_args(argv)
    args.backend, args.gpu = backend_of(args.device, args.kernel, parser)
    # (an output naming an input is refused before the work: main)
    if args.predictions and args.logits and os.path.realpath(
            args.predictions) == os.path.realpath(args.logits):
        parser.error('--predictions and --logits name the same file')
    return args


def backend_of(spec, kernel, parser):
    """``(backend, gpu id or None)`` of a ``--device`` spec."""
    try:
        gpu = devices.cuda_device_of(spec)
    except ValueError as e:
        parser.error(e)
    return (kernel, None) if gpu is None else ('cupy', gpu)


def load_test(network, args):
    """The test images and labels the network is run on; fails with one
    line if they cannot be read or are not of its input's shape."""
    name = args.dataset or network.input.get('dataset', 'mnist')
    try:
        images, labels = datasets.load_raw(name, args.data_dir)['test']
    except datasets.DatasetError as e:
        fail(e)
    shape = tuple(network.input['shape'])
    # the kernels read rows of the first layer's n_in pixels
    if images.shape[1] != network.input['size'] or \
            images.shape[1] != network.layers[0].n_in:
        fail('{}: takes images of {} ({} values), but {} images have '
             '{}'.format(args.file, 'x'.join(map(str, shape)),
                         network.input['size'], datasets.get_info(name).label,
                         images.shape[1]))
    if args.test_subset is not None:
        images, labels = images[:args.test_subset], labels[:args.test_subset]
    return images, labels


def write_output(path, write, inputs):
    """Writes ``path`` with ``write(f)``, all or nothing, over no file of
    ``inputs`` (with ``write`` None, only checks that ``path`` may be
    written: :func:`qnn.utils.atomic_files.check_output`)."""
    try:
        if write is None:
            return atomic_files.check_output(path, inputs)
        atomic_files.write_atomically(path, write, inputs)
    except OSError as e:
        fail('cannot write {}: {}'.format(path, e.strerror or e))


def predictions_text(predictions):
    """One class per line."""
    text = ''.join('{}\n'.format(int(c)) for c in predictions)
    return lambda f: f.write(text.encode('ascii'))


def logits_npy(logits):
    """The logits as a float32 ``.npy`` file."""
    return lambda f: numpy.save(f, numpy.asarray(logits, numpy.float32),
                                allow_pickle=False)


def predict(network, images, batchsize, backend):
    """Class predictions, the seconds of the forward passes and the
    logits."""
    xp = numpy
    if backend == 'cupy':
        import cupy as xp
    predictions = []
    all_logits = []
    seconds = 0.0
    for lo in range(0, len(images), batchsize):
        batch = images[lo:lo + batchsize]
        if backend == 'cupy':
            batch = xp.asarray(batch)
            xp.cuda.Device().synchronize()
        start = time.perf_counter()
        logits = packed_forward.forward(network, batch, backend)
        y = logits.argmax(axis=1)
        if backend == 'cupy':
            xp.cuda.Device().synchronize()
        seconds += time.perf_counter() - start
        predictions.append(xp.asnumpy(y) if backend == 'cupy' else y)
        all_logits.append(xp.asnumpy(logits) if backend == 'cupy'
                          else logits)
    return numpy.concatenate(predictions), seconds, numpy.concatenate(
        all_logits)


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
    # the packed file and the data set's files are the inputs
    inputs = [args.file] + datasets.paths(
        args.dataset or network.input['dataset'], args.data_dir)
    outputs = {name: path for name, path in (
        ('predictions', args.predictions), ('logits', args.logits))
        if path is not None}
    for path in outputs.values():  # before the work, not after it
        write_output(path, None, inputs)
    images, labels = load_test(network, args)
    if args.gpu is not None:
        use_gpu(args.gpu)
    try:
        packed_forward.warm_up(network.layers, images, args.backend)
    except ValueError as e:  # no kernels of that backend for a layer
        fail('{}: {}'.format(args.file, e))
    predictions, seconds, logits = predict(network, images, args.batchsize,
                                           args.backend)
    results = {'predictions': predictions_text(predictions),
               'logits': logits_npy(logits)}
    for name, path in outputs.items():
        write_output(path, results[name], inputs)
    accuracy = float((predictions == labels).mean())
    print('accuracy: {:.4f} ({} images, {:.3f} s, {:.0f} images/s)'.format(
        accuracy, len(images), seconds, len(images) / seconds))
    return 0


if __name__ == '__main__':
    sys.exit(main())

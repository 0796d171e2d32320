#!/usr/bin/env python
"""Packed network against the Chainer model, in one run, alternating.

For a snapshot (with its config.json) and the packed file export.py made of
it, on the 10,000 MNIST test images at one batch size:

* throughput: ``--rounds`` times, the Chainer model in evaluation mode
  (float32 pixels / 255, what train_mnist.py evaluates) and then the packed
  network (uint8 pixels, numba), and, with ``make onnx``, the float peer
  (``bench/peers/onnxruntime_float.py``: onnxruntime running the trained
  network as a plain float32 graph, float32 pixels / 255 as Chainer's,
  numba's number of threads), each timed over the forward passes alone;
  median images/s of each and their ratios;
* the first layer alone, both ways, alternating: the packed file's
  bit-plane layer (8 AND-popcounts per word, integer thresholds) against a
  float first layer (float32 pixels times the +-1 weights as one BLAS
  product, then the thresholds);
* peak resident memory of a process that loads and runs only one of the
  two (a child process each);
* sizes: snapshot, float32 weights, packed file;
* exactness: the images whose predicted class differs between the two (at
  most 5 listed, with the number of first-layer units whose sign differs
  and the smallest |BN| among them), and whether the packed network's
  logits equal a float64 evaluation of the same folded network (exact:
  every sum is an integer below 2^53).

    .venv/bin/python bench/inference.py SNAPSHOT FILE [--batchsize 1000]

A benchmark, not a test: it asserts nothing. The machines drift; only the
ratios of one run mean much.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from qnn.backends import inference_threads  # NOQA: E402
inference_threads.configure()  # before NumPy and numba start

import numpy  # NOQA: E402

from qnn.datasets import mnist  # NOQA: E402
from qnn.packed import format as packed_format  # NOQA: E402
from qnn.packed import bits as packed_bits  # NOQA: E402
from qnn.packed import dense_kernels  # NOQA: E402
from qnn.packed import forward as packed_forward  # NOQA: E402
from qnn.serializers import npz_arrays  # NOQA: E402

MODEL = 'updater/model:main/'  # the model's arrays in a trainer snapshot


def chainer_model(snapshot):
    """The trained predictor of ``snapshot``; exits with one line if the
    file cannot be loaded (a Python object in it included)."""
    from qnn.training.extensions import snapshots
    from qnn.training import options as train_options
    import train_mnist
    with open(os.path.join(os.path.dirname(snapshot), 'config.json')) as f:
        config = json.load(f)
    args = train_options.parse_args(['--unit', str(config['unit'])])
    model = train_mnist.build_model(args)
    try:
        snapshots.load_arrays(snapshot, model, MODEL)
    except snapshots.SnapshotError as e:
        sys.exit('{}: cannot load it: {}'.format(snapshot, e))
    return model.predictor


def chainer_forward(predictor, x, batchsize):
    import chainer
    out = []
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for lo in range(0, len(x), batchsize):
            out.append(predictor(x[lo:lo + batchsize]).array)
    return numpy.concatenate(out)


def packed_logits(network, images, batchsize):
    return numpy.concatenate([
        packed_forward.forward(network, images[lo:lo + batchsize])
        for lo in range(0, len(images), batchsize)])


def onnx_peer(snapshot):
    """``forward(x, batchsize)`` of the float peer
    (:mod:`peers.onnxruntime_float`) of ``snapshot`` on float32 pixels in
    [0, 1], with numba's number of threads, or ``None`` without onnx and
    onnxruntime (``make onnx``); exits with one line if the snapshot has
    no float graph."""
    try:
        import onnx  # NOQA: F401
        import onnxruntime  # NOQA: F401
    except ImportError:
        return None
    import export
    from peers import onnxruntime_float
    try:
        model, _ = onnxruntime_float.load(snapshot)
    except (export.ExportError, onnxruntime_float.GraphError) as e:
        sys.exit('{}: no float graph of it: {}'.format(snapshot, e))
    session = onnxruntime_float.session(
        model, __import__('numba').get_num_threads())
    return lambda x, batchsize: onnxruntime_float.run(session, x, batchsize)


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def float_images(images):
    x = images.astype(numpy.float32)
    x *= 1 / 255.  # as mnist.get_mnist
    return x


def exact_logits(network, images):
    """float64 evaluation of the folded network (dense +-1 matrices)."""
    x = images.astype(numpy.float64)
    for layer in network.layers:
        W = numpy.where(packed_bits.unpack_bits(layer.weights, layer.n_in),
                        1.0, -1.0)
        a = x @ W.T
        if layer.output == 'sign':
            x = numpy.where(a >= layer.thresholds, 1.0, -1.0)
    return packed_forward.affine_logits(a.astype(numpy.int64), layer)


def first_layer(network, images, x, batchsize, rounds):
    """Seconds of the first layer: bit planes vs float, alternating."""
    kernels = dense_kernels.numba_kernels()
    layer = network.layers[0]
    WT = layer.transposed_weights()
    signs = numpy.where(packed_bits.unpack_bits(layer.weights,
                                                layer.n_in), 1, -1)
    Wf = numpy.ascontiguousarray(signs.T, numpy.float32)
    # the same thresholds on the float sum a = s / 255
    tau = (layer.thresholds / 255.0).astype(numpy.float32)
    images = numpy.require(images, numpy.uint8, ['C', 'W'])

    def planes():
        for lo in range(0, len(images), batchsize):
            batch = images[lo:lo + batchsize]
            sums = numpy.empty((len(batch), layer.n_out), numpy.int64)
            kernels['planes'](batch, WT, sums)
            out = numpy.empty((len(batch), packed_bits.n_words(
                layer.n_out)), numpy.uint64)
            kernels['threshold_pack'](sums, layer.thresholds, out)

    def floats():
        for lo in range(0, len(x), batchsize):
            a = x[lo:lo + batchsize] @ Wf
            packed_bits.pack_bits(a >= tau)

    planes()
    floats()
    times = {'bit planes': [], 'float': []}
    for _ in range(rounds):
        times['bit planes'].append(timed(planes)[0])
        times['float'].append(timed(floats)[0])
    return {k: statistics.median(v) for k, v in times.items()}


def child(kind, snapshot, path, batchsize):
    """Loads and runs one path once; prints its peak RSS in MiB."""
    images = mnist.load_raw()['test'][0]
    if kind == 'chainer':
        chainer_forward(chainer_model(snapshot), float_images(images),
                        batchsize)
    else:
        network = packed_format.load(path)
        packed_logits(network, images, batchsize)
    # VmHWM, not getrusage's ru_maxrss: Linux carries the latter over
    # from the parent across fork and exec
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                print(int(line.split()[1]) / 1024)


def peak_rss(kind, args):
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), args.snapshot, args.file,
         '--batchsize', str(args.batchsize), '--child', kind],
        stdout=subprocess.PIPE, universal_newlines=True, check=True)
    return float(result.stdout.split()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('snapshot', metavar='SNAPSHOT')
    parser.add_argument('file', metavar='FILE', help="export.py's file of it")
    parser.add_argument('--batchsize', type=int, default=1000,
                        help='images per forward pass, both (default: '
                        "train_mnist.py's --eval-batchsize)")
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--child', choices=('chainer', 'packed'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.snapshot, args.file, args.batchsize)
        return 0

    images, labels = mnist.load_raw()['test']
    x = float_images(images)
    predictor = chainer_model(args.snapshot)
    network = packed_format.load(args.file)
    packed_forward.warm_up(network.layers, images)
    chainer_forward(predictor, x[:args.batchsize], args.batchsize)

    peer = onnx_peer(args.snapshot)
    seconds = {'chainer': [], 'packed': [], 'onnxruntime': []}
    for _ in range(args.rounds):
        t, chainer_logits = timed(chainer_forward, predictor, x,
                                  args.batchsize)
        seconds['chainer'].append(t)
        t, logits = timed(packed_logits, network, images, args.batchsize)
        seconds['packed'].append(t)
        if peer is not None:
            seconds['onnxruntime'].append(timed(
                peer, x, args.batchsize)[0])
    n = len(images)
    rate = {k: n / statistics.median(v) for k, v in seconds.items() if v}
    layer1 = first_layer(network, images, x, args.batchsize, args.rounds)
    memory = {kind: peak_rss(kind, args) for kind in ('chainer', 'packed')}
    float_bytes = sum(
        array.size * 4 for key, array in
        npz_arrays.read_arrays(args.snapshot, MODEL).items()
        if key.endswith('/W'))

    print('# {} images, batch {}, {} rounds alternating, {} CPUs; numba '
          'threads {}'.format(n, args.batchsize, args.rounds, os.cpu_count(),
                              __import__('numba').get_num_threads()))
    print('| | Chainer float32 (eval) | packed (numba) | ratio |')
    print('|---|---:|---:|---:|')
    print('| images/s (median) | {:.0f} | {:.0f} | {:.2f}x |'.format(
        rate['chainer'], rate['packed'], rate['packed'] / rate['chainer']))
    print('| seconds per 10k (all rounds) | {} | {} | |'.format(
        ' '.join('{:.3f}'.format(t) for t in seconds['chainer']),
        ' '.join('{:.3f}'.format(t) for t in seconds['packed'])))
    print('| peak RSS of a process running it, MiB | {:.0f} | {:.0f} | '
          '{:.2f}x |'.format(memory['chainer'], memory['packed'],
                             memory['chainer'] / memory['packed']))
    print('| accuracy | {:.4f} | {:.4f} | |'.format(
        (chainer_logits.argmax(1) == labels).mean(),
        (logits.argmax(1) == labels).mean()))
    if 'onnxruntime' in rate:
        print()
        print('the float peer (onnxruntime on bench/peers/onnxruntime_float.'
              'py\'s float32 graph), median: {:.0f} images/s; packed '
              '{:.2f}x'.format(
                  rate['onnxruntime'], rate['packed'] / rate['onnxruntime']))
    print()
    print('| size | bytes | vs packed |')
    print('|---|---:|---:|')
    packed_size = os.path.getsize(args.file)
    for name, size in (('snapshot (trainer NPZ)',
                        os.path.getsize(args.snapshot)),
                       ('float32 weights (W of l1, l2, l3)', float_bytes),
                       ('packed file', packed_size)):
        print('| {} | {} | {:.1f}x |'.format(name, size,
                                             size / packed_size))
    print()
    print('first layer alone, median s per 10k: bit planes {:.3f}, float '
          '(BLAS) {:.3f}: bit planes {:.2f}x faster'.format(
              layer1['bit planes'], layer1['float'],
              layer1['float'] / layer1['bit planes']))

    differ = numpy.flatnonzero(chainer_logits.argmax(1) != logits.argmax(1))
    print('predictions differing from Chainer: {} of {}'.format(
        len(differ), n))
    if len(differ):
        import chainer
        p = predictor
        with chainer.using_config('train', False), \
                chainer.no_backprop_mode():
            y32 = p.b1(p.l1(x[differ])).array
        layer = network.layers[0]
        signs = numpy.where(packed_bits.unpack_bits(
            layer.weights, layer.n_in), 1, -1)
        packed_signs = images[differ].astype(numpy.int64) @ signs.T \
            >= layer.thresholds
        for row, index in enumerate(differ[:5]):
            units = numpy.flatnonzero((y32[row] >= 0) != packed_signs[row])
            print('  image {}: label {}, Chainer {}, packed {}; first-layer '
                  'units of another sign: {} (|BN| <= {:.2g})'.format(
                      index, labels[index], chainer_logits[index].argmax(),
                      logits[index].argmax(), len(units),
                      abs(y32[row, units]).max() if len(units) else 0))
    exact = exact_logits(network, images)
    print('packed logits equal to the float64 evaluation of the folded '
          'network: {} of {} images'.format(
              int((exact == logits).all(axis=1).sum()), n))
    print('packed logits equal to Chainer\'s (bit for bit): {} of {} '
          'images'.format(int((chainer_logits == logits).all(axis=1).sum()),
                          n))
    return 0


if __name__ == '__main__':
    sys.exit(main())

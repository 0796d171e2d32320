#!/usr/bin/env python
"""Packed networks against their Chainer models and onnxruntime: agreement,
size, speed.

For each snapshot (its config.json beside it; an MLP or a ConvNet of any
size and data set) it exports the packed file with export.py's folding and
runs the test set the network was trained on:

* agreement: predictions of the packed network (numba) that differ from
  the Chainer model's in evaluation mode (the first few listed), logits
  equal to Chainer's bit for bit, and logits equal to the NumPy reference
  of the packed arithmetic (exact integers; ``--reference-images`` of
  them, the reference being slow for ConvNets);
* sizes: the float32 weights and BN parameters, the packed file;
* speed: images per second of the Chainer model, of the packed network,
  of the float peer (``bench/peers/onnxruntime_float.py``: onnxruntime
  running the same trained network as a plain float32 graph, +-1 weights,
  BN as multiply-add, sign as compare) and of onnxruntime running our ONNX
  export (``export.py --format onnx``), each with as many threads as
  numba's, at batch ``--batchsize`` (all test images) and at batch 1
  (latency: ``--single-calls`` calls of one image each, the test images
  in turn), each the median of ``--rounds`` rounds, the four alternating
  in one run; the predictions of the float peer that differ from the
  Chainer model's, and how many of the export's logits equal the packed
  network's;
* the roofline (``bench/roofline.py``, measured once at the start, on as
  many cores as numba's threads, ``roofline.peak``): the packed network's
  images/s as a fraction of its ceiling at that batch.

    .venv/bin/python bench/packed_networks.py result/cnn/snapshot_iter_1200 ...
    .venv/bin/python bench/packed_networks.py SNAPSHOT --single-calls 1000

A benchmark, not a test: it asserts nothing. The machines drift; only the
ratios of one run mean much.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from qnn.backends import inference_threads  # NOQA: E402
inference_threads.configure()  # before NumPy and numba start

import numba  # NOQA: E402
import numpy  # NOQA: E402

from qnn.backends import chainer_compat  # NOQA: E402,F401  (before chainer)
import chainer  # NOQA: E402

import export  # NOQA: E402
from peers import onnxruntime_float  # NOQA: E402
import reference  # NOQA: E402
import roofline  # NOQA: E402
from qnn import datasets  # NOQA: E402
from qnn.packed import format as packed_format  # NOQA: E402
from qnn.packed import forward as packed_forward  # NOQA: E402
from qnn.packed import model  # NOQA: E402
from qnn.packed import summary as packed_summary  # NOQA: E402
from qnn.training.extensions import snapshots  # NOQA: E402


def in_batches(function, x, batchsize):
    return numpy.concatenate([function(x[lo:lo + batchsize])
                              for lo in range(0, len(x), batchsize)])


def alternate(runs, rounds):
    """Median seconds of each ``(name, function)``, run in turn."""
    seconds = {name: [] for name, _ in runs}
    for _ in range(rounds):
        for name, function in runs:
            start = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in seconds.items()}


def measure(snapshot, options):
    config, _ = export.read_options(snapshot)
    network = export.load(snapshot)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'network.bnn')
        packed_format.save(path, network)
        network = packed_format.load(path)
    name = network.input['dataset']
    images, labels = datasets.load_raw(name, options.data_dir)['test']
    pixels = datasets.INPUT_RANGES[config.input_range]
    x = images.astype(numpy.float32) * numpy.float32(pixels['scale'] / 255.)
    x += numpy.float32(pixels['shift'])
    predictor = reference.chainer_predictor(snapshot, config)

    def chainer_logits(batch):
        with chainer.using_config('train', False), \
                chainer.no_backprop_mode():
            return predictor(batch).array

    def packed_logits(batch):
        return packed_forward.forward(network, batch, 'numba')

    session = onnx_session(network)
    peer = onnxruntime_float.session(onnxruntime_float.load(snapshot)[0],
                                     numba.get_num_threads())
    unit = onnxruntime_float.unit_pixels(images)

    def float_logits(batch):
        return peer.run(None, {onnxruntime_float.INPUT: batch})[0]

    def onnx_logits(batch):
        if session is None:  # a network the ONNX export refuses: no peer
            return numpy.full((len(batch), 1), numpy.nan, numpy.float32)
        return session.run(None, {'pixels': batch})[0]

    packed_forward.warm_up(network.layers, images)
    ours = in_batches(packed_logits, images, options.batchsize)
    theirs = in_batches(chainer_logits, x, options.batchsize)
    n_ref = min(options.reference_images, len(images))
    exact = in_batches(lambda b: packed_forward.forward(
        network, b, 'numpy'), images[:n_ref], 100)
    exported = in_batches(onnx_logits, images, options.batchsize)  # NaN: none
    floats = in_batches(float_logits, unit, options.batchsize)
    differ = numpy.flatnonzero(ours.argmax(1) != theirs.argmax(1))
    # the test images in turn, as many as --single-calls
    latency = numpy.arange(options.single_calls) % len(images)
    x1, images1, unit1 = x[latency], images[latency], unit[latency]
    runs = [
        ('chainer', lambda: in_batches(chainer_logits, x,
                                       options.batchsize)),
        ('packed', lambda: in_batches(packed_logits, images,
                                      options.batchsize)),
        ('float', lambda: in_batches(float_logits, unit, options.batchsize)),
        ('onnx', lambda: in_batches(onnx_logits, images, options.batchsize)),
        ('chainer-1', lambda: in_batches(chainer_logits, x1, 1)),
        ('packed-1', lambda: in_batches(packed_logits, images1, 1)),
        ('float-1', lambda: in_batches(float_logits, unit1, 1)),
        ('onnx-1', lambda: in_batches(onnx_logits, images1, 1)),
    ]
    speed = alternate([run for run in runs
                       if session is not None or 'onnx' not in run[0]],
                      options.rounds)
    speed.update({name: float('nan') for name, _ in runs
                  if name not in speed})
    rows = packed_summary.rows(network)
    return {
        'snapshot': snapshot, 'network': model.describe(config), 'dataset': name,
        'images': len(images), 'differ': differ,
        'equal_chainer': int((ours == theirs).all(axis=1).sum()),
        'float_differ': int((floats.argmax(1) != theirs.argmax(1)).sum()),
        'equal_onnx': int((ours == exported).all(axis=1).sum())
        if session is not None else '-',
        'equal_reference': int((ours[:n_ref] == exact).all(
            axis=1).sum()), 'reference_images': n_ref,
        'accuracy': ((theirs.argmax(1) == labels).mean(),
                     (ours.argmax(1) == labels).mean()),
        'float32_bytes': sum(r['float32_bytes'] for r in rows),
        'file_bytes': network.file_size,
        'rate': {k: (len(images) if '-1' not in k else
                     len(latency)) / v for k, v in speed.items()},
        'ceiling': {batch: roofline.ceiling(network, options.roofline,
                                            batch)
                    for batch in (options.batchsize, 1)},
        'labels': labels, 'ours': ours, 'theirs': theirs,
    }


def onnx_session(network):
    """onnxruntime on our ONNX export of the packed network (``export.py
    --format onnx``), as many threads as numba; ``None`` for a network the
    export refuses."""
    from qnn.packed import onnx_export
    try:
        graph = onnx_export.to_onnx(network)
    except onnx_export.UnsupportedLayer:
        return None  # (k-bit convolutions)
    return onnxruntime_float.session(graph, numba.get_num_threads())


def report(results, options):
    print('| network | data set | test images | predictions differing | '
          'logits = Chainer\'s | logits = reference | float peer\'s '
          'predictions differing | logits = our ONNX export\'s | accuracy '
          'Chainer / packed | float32 B | file B | smaller |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|')
    for r in results:
        print('| {} | {} | {} | {} | {} | {} of {} | {} | {} | {:.4f} / '
              '{:.4f} | {} | {} | {:.1f}x |'.format(
                  r['network'], r['dataset'], r['images'], len(r['differ']),
                  r['equal_chainer'], r['equal_reference'],
                  r['reference_images'], r['float_differ'], r['equal_onnx'],
                  r['accuracy'][0], r['accuracy'][1], r['float32_bytes'],
                  r['file_bytes'], r['float32_bytes'] / r['file_bytes']))
    print()
    print('images/s, median of {} rounds alternating (batch 1: {} calls '
          'of one image); numba and onnxruntime threads {}; float peer: '
          'bench/peers/onnxruntime_float.py; our ONNX export: export.py '
          '--format onnx; roofline: bench/roofline.py, {:.3g} bit MACs/s '
          'and L2 {:.1f} GB/s on {} cores'.format(
              options.rounds, options.single_calls, numba.get_num_threads(),
              options.roofline['xor_popcount'],
              options.roofline['l2_bytes'] / 1e9, numba.get_num_threads()))
    for batch, suffix in ((options.batchsize, ''), (1, '-1')):
        print()
        print('batch {}: | network | data set | Chainer | onnxruntime float '
              'peer | our ONNX export | packed | packed / float peer | '
              'packed / Chainer | packed us/image | float peer us/image | '
              'roofline images/s | packed / roofline |'.format(batch))
        print('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
        for r in results:
            rate = {k[:-len(suffix)] if suffix else k: v
                    for k, v in r['rate'].items() if k.endswith(suffix) and
                    (suffix or '-' not in k)}
            print('| {} | {} | {:.0f} | {:.0f} | {:.0f} | {:.0f} | {:.2f}x | '
                  '{:.2f}x | {:.1f} | {:.1f} | {:.0f} | {:.0%} |'.format(
                      r['network'], r['dataset'], rate['chainer'],
                      rate['float'], rate['onnx'], rate['packed'],
                      rate['packed'] / rate['float'],
                      rate['packed'] / rate['chainer'], 1e6 / rate['packed'],
                      1e6 / rate['float'], r['ceiling'][batch],
                      rate['packed'] / r['ceiling'][batch]))
    for r in results:
        for index in r['differ'][:5]:
            print('{}: image {}, label {}, Chainer {}, packed {}'.format(
                r['snapshot'], index, r['labels'][index],
                r['theirs'][index].argmax(), r['ours'][index].argmax()))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('snapshots', nargs='+', metavar='SNAPSHOT')
    parser.add_argument('--data-dir', default=None)
    parser.add_argument('--batchsize', type=int, default=1000)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--single-calls', '--latency-images', type=int,
                        default=10000, help='calls of one image at batch 1')
    parser.add_argument('--reference-images', type=int, default=1000)
    options = parser.parse_args(argv)
    if options.single_calls < 1:
        parser.error('--single-calls must be at least 1')
    options.roofline = roofline.peak(roofline.measure(
        numba.get_num_threads(), 3, 0.3), numba.get_num_threads())
    results = []
    for snapshot in options.snapshots:
        try:
            results.append(measure(snapshot, options))
        except (export.ExportError, datasets.DatasetError,
                onnxruntime_float.GraphError,
                snapshots.SnapshotError) as e:
            sys.exit('{}: {}'.format(snapshot, e))
    report(results, options)
    return 0


if __name__ == '__main__':
    sys.exit(main())

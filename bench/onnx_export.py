#!/usr/bin/env python
"""The ONNX and QONNX exports of a snapshot against its packed network.

Writes the three files of ``export.py`` (``--format packed``, ``onnx``,
``qonnx``) into ``--out`` and prints a table: the size of each file, and
on the MNIST test images how many logits of onnxruntime (the ONNX file)
and of qonnx's executor (the QONNX file, after qonnx's cleanup and
datatype inference) equal the packed network's bit for bit, how many
predictions equal the packed network's and the Chainer model's, the
accuracy, and the images/s of each (one timed pass after an untimed one;
qonnx's executor is a reference, not a runtime).

    .venv/bin/python bench/onnx_export.py SNAPSHOT [--out DIR]

A benchmark, not a test: it asserts nothing. Needs ``make onnx``. A
format that refuses the network (QONNX of a WAGE network) has no row.
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy  # NOQA: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('snapshot', metavar='SNAPSHOT')
    parser.add_argument('--out', default=None, metavar='DIR',
                        help='where the three files go (default: beside '
                        'the snapshot)')
    parser.add_argument('--qonnx-images', type=int, default=10000,
                        metavar='N', help='test images for qonnx\'s '
                        'executor (default: all 10,000)')
    return parser.parse_args()


def chainer_predictions(snapshot, images):
    """The trained Chainer model's classes, in evaluation mode, of the
    images as train_mnist.py scales them."""
    import chainer
    from qnn import datasets
    from qnn.training.extensions import snapshots
    from qnn.training import options as train_options
    import train_mnist
    with open(os.path.join(os.path.dirname(snapshot), 'config.json')) as f:
        config = json.load(f)
    # the network of the run's options (MLP or ConvNet, any bits)
    args = train_options.parse_args([])
    vars(args).update({k: v for k, v in config.items() if hasattr(args, k)})
    model = train_mnist.build_model(args)
    snapshots.load_arrays(snapshot, model, 'updater/model:main/')
    pixels = datasets.INPUT_RANGES[config.get('input_range', 'unit')]
    x = images.astype('float32')
    x *= pixels['scale'] / 255.
    x += numpy.float32(pixels['shift'])
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        return numpy.concatenate([
            model.predictor(x[lo:lo + 1000]).array.argmax(axis=1)
            for lo in range(0, len(x), 1000)])


def timed(run, *args):
    run(*args)
    start = time.perf_counter()
    out = run(*args)
    return out, time.perf_counter() - start


def run_onnxruntime(path, images):
    import onnxruntime
    session = onnxruntime.InferenceSession(
        path, providers=['CPUExecutionProvider'])
    return timed(lambda: session.run(None, {'pixels': images})[0])


def run_qonnx(path, images):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model
    model = cleanup_model(ModelWrapper(path)).transform(
        ChangeBatchSize(len(images))).transform(InferShapes()).transform(
            InferDataTypes())
    name, out = model.graph.input[0].name, model.graph.output[0].name
    x = images.astype(numpy.float32)
    return timed(lambda: execute_onnx(model, {name: x})[out])


def exported(export, snapshot, name, path):
    """Whether export.py wrote ``path``: a format that refuses the network
    (one line on stderr, exit status 1) has no row."""
    try:
        return export.main([snapshot, '--format', name, '-o', path]) == 0
    except SystemExit as e:
        return e.code == 0


def main():
    args = parse_args()
    import export
    from qnn.datasets import mnist
    from qnn.packed import format as packed_format
    from qnn.packed import forward as packed_forward
    out = args.out or os.path.dirname(args.snapshot) or '.'
    os.makedirs(out, exist_ok=True)
    base = os.path.join(out, os.path.basename(args.snapshot))
    paths = {f: base + suffix for f, suffix in export.SUFFIXES.items()}
    made = [name for name, path in paths.items()
            if exported(export, args.snapshot, name, path)]
    images, labels = mnist.load_raw()['test']
    network = packed_format.load(paths['packed'])
    packed, packed_s = timed(packed_forward.forward, network, images)
    chainer = chainer_predictions(args.snapshot, images)
    n = min(args.qonnx_images, len(images))
    runs = {'onnx': lambda: run_onnxruntime(paths['onnx'], images),
            'qonnx': lambda: run_qonnx(paths['qonnx'], images[:n])}
    results = {'packed': (packed, packed_s)}
    results.update({name: run() for name, run in runs.items()
                    if name in made})
    print('\n| file | bytes | images | logits equal to packed | classes '
          'equal to packed | classes equal to Chainer | accuracy | '
          'images/s |\n|---|---:|---:|---:|---:|---:|---:|---:|')
    for name, (logits, seconds) in results.items():
        m = len(logits)
        classes = logits.argmax(axis=1)
        print('| {} ({}) | {} | {} | {} | {} | {} | {:.4f} | {:.0f} |'.format(
            os.path.basename(paths[name]), name,
            os.path.getsize(paths[name]), m,
            int((logits == packed[:m]).all(axis=1).sum()),
            int((classes == packed[:m].argmax(axis=1)).sum()),
            int((classes == chainer[:m]).sum()),
            float((classes == labels[:m]).mean()), m / seconds))


if __name__ == '__main__':
    main()

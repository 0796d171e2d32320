#!/usr/bin/env python
"""Export a trained binarized network to a packed file of bits, ONNX or C.

Reads a training snapshot of train_mnist.py (the Trainer's NPZ) and the
config.json beside it, folds each batch normalization and sign into
integer thresholds (:mod:`qnn.packed.model`), packs the weights to 64-bit
words and writes the file of :mod:`qnn.packed.format`; then prints its summary
(:mod:`qnn.packed.summary`). inference.py runs the file. ``--format onnx``
and ``--format qonnx`` write the same folded network as an ONNX graph
instead (:mod:`qnn.packed.onnx_export`; ``make onnx`` installs onnx), and
``--format c`` a directory of dependency-free C99 source
(:mod:`qnn.packed.c_source`).

    .venv/bin/python export.py result/snapshot_iter_12000 -o mlp.bnn
    .venv/bin/python export.py result/snapshot_iter_12000 --format onnx
    .venv/bin/python export.py result/snapshot_iter_12000 --format c -o mlp_c
"""
import argparse
import os
import sys

from qnn.utils import environment_check
environment_check.require('export.py')


from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import net
from qnn import datasets
from qnn.packed import folding
from qnn.packed import format as packed_format
from qnn.packed import model
from qnn.packed import summary as packed_summary
from qnn.serializers import npz_arrays
from qnn.training import run_history
from qnn.utils import atomic_files
from qnn.utils import errors
from qnn.utils import input_files
from qnn.utils.errors import fail

PREFIX = 'updater/model:main/predictor/'
# the parameters folded, which must hold real floats
FLOATS = ('/W', '/gamma', '/beta', '/avg_mean', '/avg_var')
# --format: the default output's suffix (SNAPSHOT + suffix; c: a directory)
SUFFIXES = {'packed': '.bnn', 'onnx': '.onnx', 'qonnx': '.qonnx.onnx',
            'c': '_c'}


class ExportError(Exception):
    """The snapshot cannot be exported; the message says why."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('snapshot', metavar='SNAPSHOT',
                        help='snapshot_iter_N written by train_mnist.py '
                        '(its config.json must be beside it)')
    parser.add_argument('-o', '--output', metavar='FILE', default=None,
                        help='file to write, or directory for --format c '
                        '(default: SNAPSHOT.bnn, SNAPSHOT.onnx, '
                        'SNAPSHOT.qonnx.onnx or SNAPSHOT_c)')
    parser.add_argument('--format', '-f', choices=tuple(SUFFIXES),
                        default='packed',
                        help='packed: the file of bits that inference.py '
                        'runs; onnx: a standard ONNX model; qonnx: the '
                        'QONNX dialect for FINN; c: C99 source, '
                        'qnn_model.h and qnn_model.c (default: packed)')
    return parser.parse_args(argv)


def read_options(snapshot):
    """``(options, record)`` of the run that wrote ``snapshot``: its
    config.json (:func:`qnn.training.run_history.read_options`)."""
    directory = os.path.dirname(snapshot) or '.'
    path = os.path.join(directory, run_history.CONFIG_NAME)
    if not os.path.lexists(path):
        raise ExportError('{}: no config.json beside it ({}), so the '
                          'options it was trained with are unknown'.format(
                              snapshot, path))
    try:
        return run_history.read_options(directory)
    except run_history.RunHistoryError as e:
        raise ExportError('{}: {}'.format(snapshot, e))


def read_parameters(snapshot, options):
    """``{'l1/W': array, 'b1/gamma': array, ...}`` of the model in the
    snapshot; no member may declare more bytes than the largest weight of
    the network of ``options`` (:func:`read_options`), in float64."""
    info = datasets.get_info(options.dataset)
    bound = 8 * net.largest_weight(
        info.shape, info.n_classes, options.unit,
        options.cnn_size if options.arch == 'cnn' else None)
    try:
        with input_files.open_regular(snapshot) as f:
            arrays = npz_arrays.read_arrays(f, PREFIX, bound, FLOATS)
    except Exception as e:  # zipfile, zlib and NumPy raise many types
        raise ExportError('cannot export {}: {}'.format(
            snapshot, npz_arrays.describe(e)))
    return {key[len(PREFIX):]: array for key, array in arrays.items()}


def load(snapshot):
    """The folded network (:func:`qnn.packed.model.fold`) of
    ``snapshot``."""
    try:  # a FIFO or a device is no snapshot (nor a reason to wait)
        input_files.open_regular(snapshot).close()
    except OSError as e:
        raise ExportError('{}: {}'.format(snapshot, 'no such file' if
                                          isinstance(e, FileNotFoundError)
                                          else e.strerror or e))
    options, record = read_options(snapshot)
    try:
        model.check_packable(options)
        return model.fold(read_parameters(snapshot, options), options,
                          model.source_of(snapshot, options, record))
    except model.Unsupported as e:
        raise ExportError('{}: {}'.format(snapshot, e))
    except folding.MissingParameter as e:
        raise ExportError('{}: {}'.format(snapshot, e))
    except folding.FoldingError as e:
        raise ExportError('{}: cannot fold it: {}'.format(snapshot, e))


def write_packed(network, output, snapshot):
    """Writes the packed file of ``network`` (of ``snapshot``); returns its
    summary (of the file read back)."""
    try:
        packed_format.save(output, network, inputs=[snapshot])
    except OSError as e:
        raise ExportError('cannot write {}: {}'.format(
            output, e.strerror or e))
    return packed_summary.summary(packed_format.load(output))


def onnx_exporter(dialect):
    """:mod:`qnn.packed.onnx_export`, imported only here (the packed path
    needs no onnx package), once it has found onnx."""
    from qnn.packed import onnx_export
    try:
        onnx_export.import_onnx()
    except ImportError as e:
        raise ExportError('--format {} needs the onnx package, which this '
                          'Python cannot import ({}): run make onnx'.format(
                              dialect, e))
    return onnx_export


def write_onnx(network, output, dialect, snapshot):
    """Writes the ONNX (``'onnx'``) or QONNX (``'qonnx'``) model of
    ``network`` (of ``snapshot``); returns a line describing it."""
    onnx_export = onnx_exporter(dialect)
    try:
        graph = onnx_export.DIALECTS[dialect](network)
    except onnx_export.UnsupportedLayer as e:
        raise ExportError('{}: cannot export it to {}: {}'.format(
            snapshot, dialect, e))
    data = graph.SerializeToString()
    try:
        atomic_files.write_atomically(output, lambda f: f.write(data),
                                      inputs=[snapshot])
    except OSError as e:
        raise ExportError('cannot write {}: {}'.format(
            output, e.strerror or e))
    return '{} {}\nfile size: {} bytes'.format(
        dialect.upper(), onnx_export.describe(graph), len(data))


def export(snapshot, output):
    """Writes the packed file of ``snapshot`` to ``output``; returns the
    network read back from it."""
    write_packed(load(snapshot), output, snapshot)
    return packed_format.load(output)


def write_c(network, output, snapshot):
    """Writes the directory ``output``: the C source of ``network`` (of
    ``snapshot``; :mod:`qnn.packed.c_source`), all or nothing; returns
    lines describing it."""
    from qnn.packed import c_source
    try:
        files = c_source.generate(network)
    except c_source.UnsupportedNetwork as e:
        raise ExportError('{}: cannot export it to C: {}'.format(snapshot, e))
    try:
        atomic_files.write_directory_atomically(output, {
            name: text.encode('utf-8') for name, text in files.items()})
    except OSError as e:
        raise ExportError('cannot write {}: {}'.format(
            output, e.strerror or e))
    return c_source.summary(network, files)


def main(argv=None):
    errors.program = 'export.py'
    args = parse_args(argv)
    output = args.output or args.snapshot + SUFFIXES[args.format]
    try:
        if args.format in ('onnx', 'qonnx'):
            onnx_exporter(args.format)  # before any work: is onnx there?
        network = load(args.snapshot)
        if args.format == 'packed':
            text = write_packed(network, output, args.snapshot)
        elif args.format == 'c':
            text = write_c(network, output, args.snapshot)
        else:
            text = write_onnx(network, output, args.format, args.snapshot)
    except (ExportError, packed_format.PackedFileError) as e:
        fail(e)
    print('# {} -> {}'.format(args.snapshot, output))
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())

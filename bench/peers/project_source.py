"""What the peers take from the project without importing it: constants
read from its sources, and MNIST from its IDX files (NumPy only).

The PyTorch peers run in ``.venv-peer`` (``make bench-peers``: torch and
NumPy, no Chainer), so they cannot import ``net.py``: :func:`project_value`
reads a constant (``net.ARCHITECTURES``, the BN epsilon) from the
project's source with ``ast``, so the peers build the very layers the
project defines, from its one definition.
"""
import ast
import gzip
import os
import struct

import numpy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
MNIST_DIR = os.path.join(ROOT, 'data', 'mnist')
_IMAGES, _LABELS = 0x803, 0x801  # IDX magic numbers: 3-D and 1-D bytes


def project_value(module, name):
    """The literal value assigned to ``name`` at the top of the project's
    source file ``module`` (a path relative to the repository root)."""
    with open(os.path.join(ROOT, module)) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(target, 'id', None) == name
                for target in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError('{} assigns no {}'.format(module, name))


def architectures():
    """``net.ARCHITECTURES``: the BinaryConvNet sizes."""
    return project_value('net.py', 'ARCHITECTURES')


def bn_eps():
    """The BN epsilon of the project's networks (``DEFAULT_EPS``)."""
    return project_value(os.path.join(
        'qnn', 'functions', 'batch_normalization_sign.py'), 'DEFAULT_EPS')


def _read_idx(directory, name, magic):
    path = os.path.join(directory, name)
    if os.path.isfile(path + '.gz'):
        path += '.gz'
    with (gzip.open if path.endswith('.gz') else open)(path, 'rb') as f:
        content = f.read()
    found, count = struct.unpack('>II', content[:8]) if len(content) >= 16 \
        else (None, 0)
    if found != magic:
        raise ValueError('{}: not an IDX file of {}'.format(
            path, 'images' if magic == _IMAGES else 'labels'))
    if magic == _IMAGES:
        rows, cols = struct.unpack('>II', content[8:16])
        return numpy.frombuffer(content, numpy.uint8, offset=16).reshape(
            count, rows * cols)
    return numpy.frombuffer(content, numpy.uint8, offset=8)


def read_mnist(directory=MNIST_DIR):
    """``{'train': (images, labels), 'test': (images, labels)}``: uint8
    flat images ``(n, 784)`` and uint8 labels; raises ``OSError`` or
    ``ValueError`` (with the file's name)."""
    return {split: (_read_idx(directory, prefix + '-images-idx3-ubyte',
                              _IMAGES),
                    _read_idx(directory, prefix + '-labels-idx1-ubyte',
                              _LABELS))
            for split, prefix in (('train', 'train'), ('test', 't10k'))}

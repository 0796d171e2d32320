"""The packed network file: bits on disk, readable with NumPy alone.

Layout (all integers little-endian)::

    offset 0   8 bytes   magic  89 42 4E 4E 0D 0A 1A 0A  ("\\x89BNN\\r\\n\\x1a\\n")
    offset 8   uint32    format version (1)
    offset 12  uint32    length L of the header
    offset 16  L bytes   header: UTF-8 JSON (the layer table, below)
               zeros     up to the next multiple of 64
               arrays    raw, C order, each at a multiple of 64 from the
                         start of the file (zeros between them)
    last 32    bytes     SHA-256 of every byte before them

Like PNG's, the magic number fails a file passed through a text-mode or
7-bit transfer. No pickle: the header is JSON, the arrays are raw bytes of
the dtypes ``<u8`` (packed weights), ``<i4`` (thresholds) and ``<f4`` (the
output layer's affine map), located by the header.

Header::

    {"format": "qnn-packed-mlp", "file_size": <bytes of the whole file>,
     "word_bits": 64, "bit_order": "little", "padding": "zero",
     "input": {"size": 784, "pixel_bits": 8, "scale": 255, "shift": 0},
     "layers": [{"name": "l1", "kind": "planes", "n_in": 784,
                 "n_out": 1000, "output": "sign",
                 "arrays": {"weights": {"dtype": "<u8",
                                        "shape": [1000, 13],
                                        "offset": 1024}, ...}}, ...],
     "source": {...}}

Weights: one row of :math:`\\lceil n_{in}/64 \\rceil` words per unit; input
:math:`i` is bit :math:`i \\bmod 64` (least significant first) of word
:math:`\\lfloor i/64 \\rfloor`; 1 is :math:`+1`, 0 is :math:`-1`; the
padding bits are 0 (checked on load). Layer kinds (see
:mod:`qnn.packed.kernels` for the arithmetic): ``planes`` (first layer: 8-bit
pixels :math:`p`, the network's input being :math:`p / \\text{scale} +
\\text{shift}`; the thresholds hold both) and
``xnor`` (:math:`\\pm 1` inputs). Outputs: ``sign`` (array ``thresholds``,
``<i4``: the unit's bit is 1 iff its integer sum :math:`a \\ge T`) and
``affine`` (the last layer: arrays ``mean``, ``inv_std``, ``gamma``,
``beta``, ``<f4``: logits :math:`((a - \\mu) r) \\gamma + \\beta` in
float32, that order).
"""
import hashlib
import json
import struct

import numpy

from qnn.utils import atomic_files

MAGIC = b'\x89BNN\r\n\x1a\n'
VERSION = 1
FORMAT = 'qnn-packed-mlp'
ALIGN = 64
CHECKSUM_BYTES = 32
_PREFIX = struct.Struct('<8sII')
WORD_BITS = 64

# what each layer kind and output holds: array name -> dtype
_ARRAYS = {
    'weights': '<u8',
    'thresholds': '<i4',
    'mean': '<f4', 'inv_std': '<f4', 'gamma': '<f4', 'beta': '<f4',
}
_OUTPUT_ARRAYS = {
    'sign': ('thresholds',),
    'affine': ('mean', 'inv_std', 'gamma', 'beta'),
}
KINDS = ('planes', 'xnor')


class PackedFileError(Exception):
    """The file is not a usable packed network; the message says why."""


class Layer(object):

    """One packed layer.

    Attributes:
        name (str): Name of the layer in the trained model (``l1`` ...).
        kind (str): ``'planes'`` (8-bit pixel input) or ``'xnor'``
            (:math:`\\pm 1` input).
        n_in (int), n_out (int): Inputs and units.
        output (str): ``'sign'`` or ``'affine'``.
        weights (ndarray): ``uint64`` ``(n_out, ceil(n_in / 64))``.
        thresholds (ndarray): ``int32`` ``(n_out,)`` (``'sign'``).
        mean, inv_std, gamma, beta (ndarray): ``float32`` ``(n_out,)``
            (``'affine'``).
    """

    def __init__(self, name, kind, n_in, n_out, output, weights, **arrays):
        self.name = name
        self.kind = kind
        self.n_in = int(n_in)
        self.n_out = int(n_out)
        self.output = output
        self.weights = weights
        self.arrays = dict(arrays, weights=weights)
        for key, value in arrays.items():
            setattr(self, key, value)
        self._transposed = None
        self._device = {}

    @property
    def n_words(self):
        return self.weights.shape[1]

    def transposed_weights(self):
        """The weights as ``(words, n_out)`` (the numba kernels' layout),
        made once."""
        if self._transposed is None:
            self._transposed = numpy.ascontiguousarray(self.weights.T)
        return self._transposed

    def device_weights(self, cupy):
        """The weights on the current CUDA device, copied once."""
        device = cupy.cuda.Device().id
        if device not in self._device:
            self._device[device] = cupy.asarray(self.weights)
        return self._device[device]


class PackedNetwork(object):

    """A loaded file: ``layers``, ``input`` (dict), ``source`` (dict) and
    ``file_size`` (bytes of the file it was read from, or ``None``)."""

    def __init__(self, layers, input, source=None, file_size=None):
        self.layers = layers
        self.input = input
        self.source = source or {}
        self.file_size = file_size


def _check_layers(layers, input):
    """Raises :class:`PackedFileError` unless the layers chain up."""
    if not layers:
        raise PackedFileError('it has no layers')
    n = input['size']
    for index, layer in enumerate(layers):
        where = 'layer {} ({})'.format(index + 1, layer.name)
        expected_kind = 'planes' if index == 0 else 'xnor'
        if layer.kind != expected_kind:
            raise PackedFileError('{} is of kind {!r}, expected {!r}'.format(
                where, layer.kind, expected_kind))
        expected_output = 'affine' if index == len(layers) - 1 else 'sign'
        if layer.output != expected_output:
            raise PackedFileError('{} has output {!r}, expected {!r}'.format(
                where, layer.output, expected_output))
        if layer.n_in != n or layer.n_out < 1:
            raise PackedFileError('{} has {} inputs and {} units after a '
                                  'layer of {}'.format(where, layer.n_in,
                                                       layer.n_out, n))
        words = (layer.n_in + WORD_BITS - 1) // WORD_BITS
        shapes = {'weights': (layer.n_out, words)}
        for name in _OUTPUT_ARRAYS[layer.output]:
            shapes[name] = (layer.n_out,)
        if set(layer.arrays) != set(shapes):
            raise PackedFileError('{} has arrays {}, expected {}'.format(
                where, sorted(layer.arrays), sorted(shapes)))
        for name, shape in shapes.items():
            array = layer.arrays[name]
            if array.shape != shape or array.dtype != numpy.dtype(
                    _ARRAYS[name]).newbyteorder('='):
                raise PackedFileError('{} {} is {} {}, expected {} {}'.format(
                    where, name, array.dtype, array.shape,
                    numpy.dtype(_ARRAYS[name]).name, shape))
        padding = layer.n_in % WORD_BITS
        if padding and numpy.any(
                layer.weights[:, -1] >> numpy.uint64(padding)):
            raise PackedFileError('{} has padding bits set beyond its {} '
                                  'inputs'.format(where, layer.n_in))
        if layer.output == 'affine' and not all(
                numpy.isfinite(layer.arrays[k]).all()
                for k in _OUTPUT_ARRAYS['affine']):
            raise PackedFileError('{} has a non-finite output '
                                  'parameter'.format(where))
        n = layer.n_out


def encode(network):
    """Returns the bytes of the file holding ``network``."""
    _check_layers(network.layers, network.input)
    table = []
    blobs = []
    for layer in network.layers:
        table.append({'name': layer.name, 'kind': layer.kind,
                      'n_in': layer.n_in, 'n_out': layer.n_out,
                      'output': layer.output, 'arrays': {}})
        for name in ('weights',) + _OUTPUT_ARRAYS[layer.output]:
            array = numpy.ascontiguousarray(layer.arrays[name],
                                            dtype=_ARRAYS[name])
            table[-1]['arrays'][name] = {
                'dtype': _ARRAYS[name], 'shape': list(array.shape)}
            blobs.append((table[-1]['arrays'][name], array.tobytes()))
    header = {'format': FORMAT, 'file_size': 0, 'word_bits': WORD_BITS,
              'bit_order': 'little', 'padding': 'zero',
              'input': network.input, 'layers': table,
              'source': network.source}

    def layout():
        text = json.dumps(header, sort_keys=True).encode('utf-8')
        offset = _aligned(_PREFIX.size + len(text))
        for entry, data in blobs:
            entry['offset'] = offset
            offset = _aligned(offset + len(data))
        return text, offset + CHECKSUM_BYTES

    # the offsets and the size are in the header, whose length they
    # change: repeat until the layout stands still (two or three rounds)
    while True:
        text, size = layout()
        if size == header['file_size']:
            break
        header['file_size'] = size
    out = bytearray(size - CHECKSUM_BYTES)
    out[:_PREFIX.size] = _PREFIX.pack(MAGIC, VERSION, len(text))
    out[_PREFIX.size:_PREFIX.size + len(text)] = text
    for entry, data in blobs:
        out[entry['offset']:entry['offset'] + len(data)] = data
    return bytes(out) + hashlib.sha256(out).digest()


def _aligned(offset):
    return (offset + ALIGN - 1) // ALIGN * ALIGN


def decode(data):
    """Parses the bytes of a file; raises :class:`PackedFileError` saying
    what is wrong (foreign, truncated, damaged, unknown version)."""
    size = len(data)
    if size < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        raise PackedFileError('not a packed network file (no {} magic '
                              'number)'.format(FORMAT))
    if size < _PREFIX.size + CHECKSUM_BYTES:
        raise PackedFileError('truncated ({} bytes)'.format(size))
    _, version, header_length = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise PackedFileError('format version {}; this program reads '
                              'version {}'.format(version, VERSION))
    if _PREFIX.size + header_length + CHECKSUM_BYTES > size:
        raise PackedFileError('truncated ({} bytes, shorter than its '
                              'header says)'.format(size))
    try:
        header = json.loads(
            data[_PREFIX.size:_PREFIX.size + header_length].decode('utf-8'))
        expected = int(header['file_size'])
    except (ValueError, KeyError, TypeError):
        raise PackedFileError('damaged header (not the JSON layer table)')
    if size < expected:
        raise PackedFileError('truncated ({} bytes of {})'.format(
            size, expected))
    if size > expected:
        raise PackedFileError('{} bytes after its end'.format(
            size - expected))
    body = memoryview(data)[:size - CHECKSUM_BYTES]
    if hashlib.sha256(body).digest() != bytes(data[size - CHECKSUM_BYTES:]):
        raise PackedFileError('damaged (SHA-256 checksum mismatch)')
    try:
        if header['format'] != FORMAT or header['word_bits'] != WORD_BITS \
                or header['bit_order'] != 'little':
            raise PackedFileError('unsupported header {!r}'.format(
                {k: header.get(k) for k in ('format', 'word_bits',
                                            'bit_order')}))
        layers = []
        for entry in header['layers']:
            arrays = {}
            for name, spec in entry['arrays'].items():
                if name not in _ARRAYS or spec['dtype'] != _ARRAYS[name]:
                    raise PackedFileError('layer {} has an unknown array '
                                          '{}'.format(entry['name'], name))
                dtype = numpy.dtype(spec['dtype'])
                shape = tuple(int(n) for n in spec['shape'])
                offset = int(spec['offset'])
                count = int(numpy.prod(shape))
                if offset < 0 or offset + count * dtype.itemsize > len(body):
                    raise PackedFileError('layer {} {} lies outside the '
                                          'file'.format(entry['name'], name))
                arrays[name] = numpy.frombuffer(
                    data, dtype, count, offset).reshape(shape).astype(
                        dtype.newbyteorder('='))
            layers.append(Layer(entry['name'], entry['kind'],
                                entry['n_in'], entry['n_out'],
                                entry['output'], **arrays))
        network = PackedNetwork(layers, header['input'],
                                header.get('source'), size)
        if network.input.get('pixel_bits') != 8:
            raise PackedFileError('input of {} bits per pixel; this program '
                                  'reads 8'.format(
                                      network.input.get('pixel_bits')))
        _check_layers(layers, network.input)
    except PackedFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise PackedFileError('malformed layer table ({}: {})'.format(
            type(e).__name__, e))
    return network


def load(path):
    """Reads the file ``path``; raises :class:`PackedFileError` (also for a
    file that cannot be read)."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise PackedFileError('cannot read it: {}'.format(
            e.strerror or e))
    return decode(data)


def save(path, network):
    """Writes ``network`` to ``path`` all or nothing (a temporary file in
    the same directory renamed over it); raises ``OSError``."""
    data = encode(network)
    atomic_files.write_atomically(path, lambda f: f.write(data))
    return len(data)

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

Header (docs/deployment.md specifies every key)::

    {"format": "qnn-packed", "file_size": <bytes of the whole file>,
     "word_bits": 64, "bit_order": "little", "padding": "zero",
     "input": {"dataset": "mnist", "shape": [1, 28, 28], "size": 784,
               "pixel_bits": 8, "scale": 255, "shift": 0},
     "layers": [{"name": "l1", "kind": "planes", "n_in": 784,
                 "n_out": 1000, "output": "sign",
                 "arrays": {"weights": {"dtype": "<u8",
                                        "shape": [1000, 13],
                                        "offset": 1024}, ...}}, ...],
     "source": {...}}

A convolution's entry also has ``"conv"`` (``in_shape``, ``channels``,
``pool``), a k-bit layer's ``"levels"`` (``weight_bits``, ``input_bits``,
``output_bits``). Version 1 files (``"qnn-packed-mlp"``: the MLP's
``planes`` and ``xnor`` layers, an input of ``size`` only) load too.

Weights: one row of :math:`\\lceil n_{in}/64 \\rceil` words per unit; input
:math:`i` is bit :math:`i \\bmod 64` (least significant first) of word
:math:`\\lfloor i/64 \\rfloor`; 1 is :math:`+1`, 0 is :math:`-1`; the
padding bits are 0 (checked on load). Layer kinds (see
:mod:`qnn.packed.kernels`, :mod:`qnn.packed.conv_kernels` and
:mod:`qnn.packed.levels` for the arithmetic): ``planes`` (first layer:
8-bit pixels :math:`p`, the network's input being :math:`p / \\text{scale}
+ \\text{shift}`; the thresholds hold both), ``xnor`` (:math:`\\pm 1`
inputs), ``conv_pixels`` and ``conv_xnor`` (3x3 convolutions),
``levels_pixels`` and ``levels`` (k-bit weights as bit planes). Outputs:
``sign`` (array ``thresholds``, ``<i4``: the unit's bit is 1 iff its
integer sum :math:`a \\ge T`), ``levels`` (``thresholds`` ``(units,
2^k - 1)``: the unit's level is the number it reaches) and ``affine``
(the last layer: arrays ``mean``, ``inv_std``, ``gamma``, ``beta``,
``<f4``: logits :math:`((a - \\mu) r) \\gamma + \\beta` in float32, that
order).
"""
import hashlib
import json
import struct

import numpy

from qnn.backends.xnor_kernels import WORD_BITS  # NOQA: F401  (the layout)
from qnn.backends.xnor_kernels import n_words  # NOQA: F401
from qnn.utils import atomic_files

MAGIC = b'\x89BNN\r\n\x1a\n'
VERSION = 2
# the header's "format" of each version this module reads
FORMATS = {1: 'qnn-packed-mlp', 2: 'qnn-packed'}
FORMAT = FORMATS[VERSION]
ALIGN = 64
CHECKSUM_BYTES = 32
_PREFIX = struct.Struct('<8sII')
TAPS = 9  # a 3x3 convolution

# what each layer kind and output holds: array name -> dtype
_ARRAYS = {
    'weights': '<u8',
    'thresholds': '<i4',
    'flipped': '|u1',
    'mean': '<f4', 'inv_std': '<f4', 'gamma': '<f4', 'beta': '<f4',
}
_OUTPUT_ARRAYS = {
    'sign': ('thresholds',),
    'levels': ('thresholds',),
    'affine': ('mean', 'inv_std', 'gamma', 'beta'),
}
DENSE_KINDS = ('planes', 'xnor')
# k-bit convolutions are both: a convolution's shapes, a k-bit layer's levels
CONV_LEVEL_KINDS = ('conv_levels_pixels', 'conv_levels')
CONV_KINDS = ('conv_pixels', 'conv_xnor') + CONV_LEVEL_KINDS
LEVEL_KINDS = ('levels_pixels', 'levels') + CONV_LEVEL_KINDS
KINDS = DENSE_KINDS + CONV_KINDS + LEVEL_KINDS[:2]
# the kinds a layer on the pixels may have, and those after it
_FIRST_KINDS = ('planes', 'conv_pixels', 'levels_pixels',
                'conv_levels_pixels')


def pooled(size, pool):
    """The size after 2x2 max pooling with stride 2 and ``cover_all`` (an
    odd size rounds up: 7 to 4), or ``size`` without pooling."""
    return (size + 1) // 2 if pool else size


class PackedFileError(Exception):
    """The file is not a usable packed network; the message says why."""


class Layer(object):

    """One packed layer.

    Attributes:
        name (str): Name of the layer in the trained model (``l1``,
            ``conv1_1``, ``fc1`` ...).
        kind (str): ``'planes'`` (dense, 8-bit pixel input), ``'xnor'``
            (dense, :math:`\\pm 1` input), ``'conv_pixels'`` (3x3
            convolution of 8-bit pixels) or ``'conv_xnor'`` (3x3
            convolution of :math:`\\pm 1` feature maps); the k-bit
            ``'levels_pixels'``, ``'levels'`` (dense) and
            ``'conv_levels_pixels'``, ``'conv_levels'`` (3x3 convolutions,
            :mod:`qnn.packed.levels`).
        n_in (int), n_out (int): Input and output values per image
            (a convolution's: channels x height x width).
        output (str): ``'sign'`` or ``'affine'``.
        weights (ndarray): ``uint64``: ``(n_out, ceil(n_in / 64))`` for a
            dense layer, ``(channels, 9, ceil(in_channels / 64))`` for a
            convolution.
        thresholds (ndarray): ``int32`` ``(units or channels,)``
            (``'sign'``).
        flipped (ndarray): A convolution's ``uint8`` ``(channels,)``: 1
            where the weights are negated (:math:`\\gamma < 0`), which
            pools with the minimum.
        mean, inv_std, gamma, beta (ndarray): ``float32`` ``(n_out,)``
            (``'affine'``).
        conv (dict or None): A convolution's ``in_shape`` (channels,
            height, width), ``channels`` (out) and ``pool`` (2x2 max
            pooling after it).
        levels (dict or None): A k-bit layer's ``weight_bits``,
            ``input_bits`` (8: pixels) and ``output_bits`` (``None`` for
            the output layer); see :mod:`qnn.packed.levels`.
    """

    def __init__(self, name, kind, n_in, n_out, output, weights, conv=None,
                 levels=None, **arrays):
        self.name = name
        self.kind = kind
        self.n_in = int(n_in)
        self.n_out = int(n_out)
        self.output = output
        self.weights = weights
        self.conv = dict(conv) if conv is not None else None
        self.levels = dict(levels) if levels is not None else None
        self.arrays = dict(arrays, weights=weights)
        for key, value in arrays.items():
            setattr(self, key, value)
        self._cache = {}

    @property
    def n_words(self):
        return self.weights.shape[-1]

    @property
    def out_shape(self):
        """A convolution's output (channels, height, width)."""
        _, height, width = self.conv['in_shape']
        pool = self.conv['pool']
        return (self.conv['channels'], pooled(height, pool),
                pooled(width, pool))

    def cached(self, key, make):
        """``make()``, computed once per layer (a kernel's layout of the
        weights)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def transposed_weights(self):
        """A dense layer's weights as ``(words, n_out)`` (the numba
        kernels' layout), made once."""
        return self.cached('transposed', lambda: numpy.ascontiguousarray(
            self.weights.T))

    def device_weights(self, cupy):
        """The weights on the current CUDA device, copied once."""
        device = cupy.cuda.Device().id
        return self.cached(('device', device),
                           lambda: cupy.asarray(self.weights))


class PackedNetwork(object):

    """A loaded file: ``layers``, ``input`` (dict), ``source`` (dict) and
    ``file_size`` (bytes of the file it was read from, or ``None``)."""

    def __init__(self, layers, input, source=None, file_size=None):
        self.layers = layers
        self.input = input
        self.source = source or {}
        self.file_size = file_size


def _check_layers(layers, input):
    """Raises :class:`PackedFileError` unless the layers chain up from the
    input: dense layers after the convolutions, the output layer last."""
    if not layers:
        raise PackedFileError('it has no layers')
    shape = tuple(input.get('shape') or (input['size'],))
    for index, layer in enumerate(layers):
        where = 'layer {} ({})'.format(index + 1, layer.name)
        first = index == 0
        if layer.kind not in KINDS or (layer.kind in _FIRST_KINDS) != first:
            raise PackedFileError('{} is of kind {!r}'.format(
                where, layer.kind))
        expected_output = 'affine' if index == len(layers) - 1 else 'sign'
        output = 'sign' if layer.output == 'levels' else layer.output
        if output != expected_output or (
                layer.kind in CONV_KINDS and output != 'sign'):
            raise PackedFileError('{} has output {!r}, expected {!r}'.format(
                where, layer.output, expected_output))
        if (layer.kind in LEVEL_KINDS) != (layers[0].kind in LEVEL_KINDS) or \
                (layer.output == 'levels') != (layer.kind in LEVEL_KINDS and
                                               expected_output == 'sign'):
            raise PackedFileError('{}: a {} layer with output {!r} in a '
                                  'network of {} layers'.format(
                                      where, layer.kind, layer.output,
                                      layers[0].kind))
        if layer.kind in LEVEL_KINDS:
            _check_levels(layer, layers[index - 1] if index else None, where)
        if layer.kind in CONV_KINDS:
            shape = _check_conv(layer, shape, where)
        else:
            shape = _check_dense(layer, shape, where)
        _check_arrays(layer, where)


def _check_levels(layer, previous, where):
    bits = layer.levels or {}
    expected_in = 8 if previous is None else previous.levels['output_bits']
    out = bits.get('output_bits')
    if not 1 <= bits.get('weight_bits', 0) <= 4 or \
            bits.get('input_bits') != expected_in or \
            (out is None) != (layer.output == 'affine') or \
            out is not None and not 1 <= out <= 4:
        raise PackedFileError('{} has levels {}, after a layer of {}-bit '
                              'outputs'.format(where, layer.levels,
                                               expected_in))


def _check_conv(layer, shape, where):
    conv = layer.conv
    if not conv or len(shape) != 3 or tuple(conv['in_shape']) != shape:
        raise PackedFileError('{}: a convolution of {} after a layer of '
                              '{}'.format(where, conv and conv['in_shape'],
                                          shape))
    channels, height, width = shape
    out = layer.out_shape
    if layer.n_in != channels * height * width or \
            layer.n_out != out[0] * out[1] * out[2] or out[0] < 1:
        raise PackedFileError('{} has {} inputs and {} outputs, not those '
                              'of its shapes'.format(where, layer.n_in,
                                                     layer.n_out))
    return out


def _check_dense(layer, shape, where):
    n = int(numpy.prod(shape))
    if layer.conv is not None or layer.n_in != n or layer.n_out < 1:
        raise PackedFileError('{} has {} inputs and {} units after a '
                              'layer of {}'.format(where, layer.n_in,
                                                   layer.n_out, n))
    return (layer.n_out,)


def _expected_shapes(layer):
    if layer.kind in CONV_LEVEL_KINDS:
        # the weight levels as planes over the 9 C values of a filter in
        # (tap, channel) order; thresholds (channels, levels) below
        channels = layer.conv['channels']
        n_bits = TAPS * layer.conv['in_shape'][0]
        shapes = {'weights': (channels, int(layer.levels['weight_bits']),
                              n_words(n_bits)),
                  'flipped': (channels,)}
    elif layer.kind in CONV_KINDS:
        channels = layer.conv['channels']
        n_bits = layer.conv['in_shape'][0]
        # 1 where the folding negated the channel's weights (gamma < 0):
        # its pooling takes the minimum (see qnn.packed.conv_kernels)
        shapes = {'weights': (channels, TAPS, n_words(n_bits)),
                  'flipped': (channels,)}
    elif layer.kind in LEVEL_KINDS:
        channels, n_bits = layer.n_out, layer.n_in
        shapes = {'weights': (channels, int(layer.levels['weight_bits']),
                              n_words(n_bits))}
    else:
        channels, n_bits = layer.n_out, layer.n_in
        shapes = {'weights': (channels, n_words(n_bits))}
    for name in _OUTPUT_ARRAYS[layer.output]:
        shapes[name] = (channels,)
    if layer.output == 'levels':
        shapes['thresholds'] = (channels,
                                2 ** int(layer.levels['output_bits']) - 1)
    return shapes, n_bits


def _check_arrays(layer, where):
    shapes, n_bits = _expected_shapes(layer)
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
    padding = n_bits % WORD_BITS
    if padding and numpy.any(layer.weights[..., -1] >> numpy.uint64(padding)):
        raise PackedFileError('{} has padding bits set beyond its {} '
                              'inputs'.format(where, n_bits))
    if layer.output == 'affine' and not all(
            numpy.isfinite(layer.arrays[k]).all()
            for k in _OUTPUT_ARRAYS['affine']):
        raise PackedFileError('{} has a non-finite output '
                              'parameter'.format(where))


def encode(network):
    """Returns the bytes of the file holding ``network``."""
    _check_layers(network.layers, network.input)
    table = []
    blobs = []
    for layer in network.layers:
        table.append({'name': layer.name, 'kind': layer.kind,
                      'n_in': layer.n_in, 'n_out': layer.n_out,
                      'output': layer.output, 'arrays': {}})
        if layer.conv is not None:
            table[-1]['conv'] = layer.conv
        if layer.levels is not None:
            table[-1]['levels'] = layer.levels
        for name in ('weights',) + _OUTPUT_ARRAYS[layer.output] + tuple(
                name for name in ('flipped',) if name in layer.arrays):
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
    if version not in FORMATS:
        raise PackedFileError('format version {}; this program reads '
                              'versions {}'.format(version, ', '.join(
                                  str(v) for v in sorted(FORMATS))))
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
        if header['format'] != FORMATS[version] or \
                header['word_bits'] != WORD_BITS or \
                header['bit_order'] != 'little':
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
                                entry['output'], conv=entry.get('conv'),
                                levels=entry.get('levels'), **arrays))
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


def save(path, network, inputs=()):
    """Writes ``network`` to ``path`` all or nothing (a temporary file in
    the same directory renamed over it), over no file that
    :func:`qnn.utils.atomic_files.check_output` refuses (``inputs``: the
    files the caller reads); raises ``OSError``."""
    data = encode(network)
    atomic_files.write_atomically(path, lambda f: f.write(data), inputs)
    return len(data)

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
``pool``, and optionally ``ksize`` and ``pad``: 3 and 1 when absent), a
k-bit layer's ``"levels"`` (``weight_bits``, ``input_bits``,
``output_bits``); the input optionally ``pixel_thresholds`` (the first
layer reads each pixel's level, the number of them it reaches:
:func:`input_values`). Version 1 files (``"qnn-packed-mlp"``: the MLP's
``planes`` and ``xnor`` layers, an input of ``size`` only) load too.

Weights: one row of :math:`\\lceil n_{in}/64 \\rceil` words per unit; input
:math:`i` is bit :math:`i \\bmod 64` (least significant first) of word
:math:`\\lfloor i/64 \\rfloor`; 1 is :math:`+1`, 0 is :math:`-1`; the
padding bits are 0 (checked on load). Layer kinds (see
:mod:`qnn.packed.dense_kernels`, :mod:`qnn.packed.conv_kernels` and
:mod:`qnn.packed.level_kernels` for the arithmetic): ``planes`` (first layer:
8-bit pixels :math:`p`, the network's input being :math:`p / \\text{scale}
+ \\text{shift}`; the thresholds hold both), ``xnor`` (:math:`\\pm 1`
inputs), ``conv_pixels`` and ``conv_xnor`` (k x k convolutions),
``levels_pixels`` and ``levels`` (k-bit weights as bit planes). Outputs:
``sign`` (array ``thresholds``, ``<i4``: the unit's bit is 1 iff its
integer sum :math:`a \\ge T`), ``levels`` (``thresholds`` ``(units,
2^k - 1)``: the unit's level is the number it reaches) and ``affine``
(the last layer: ``weights`` and, instead of ``thresholds``, the arrays
``mean``, ``inv_std``, ``gamma``, ``beta``, ``<f4``: logits
:math:`((a - \\mu) r) \\gamma + \\beta` in float32, that order).

A file is anyone's to make and the kernels index memory by what it says,
so :func:`load` and :func:`decode` check everything before a network is
returned (docs/deployment.md, "What a reader checks", lists it in the
order of the code): a regular file only; the prefix, then a header of
bounded length and nesting; the declared size, then the checksum, read a
megabyte at a time (a file of any size costs at most its arrays); every
field's type and range; the layers' chain from the input (the data set's
image shape) to its classes; each array's shape, dtype and place (aligned,
after the header, inside the file, not overlapping, zero bytes between);
padding bits, finite floats, ``flipped`` 0 or 1. :func:`encode` refuses a
network that would fail them.
"""
import hashlib
import io
import json
import math
import re
import struct

import numpy

from qnn.packed.bits import PIXEL_BITS
from qnn.packed.bits import WORD_BITS
from qnn.packed.bits import n_words
from qnn.utils import atomic_files
from qnn.utils import input_files
from qnn.utils.pixels import PIXEL_MAX

MAGIC = b'\x89BNN\r\n\x1a\n'
VERSION = 2
# the header's "format" of each version this module reads
FORMATS = {1: 'qnn-packed-mlp', 2: 'qnn-packed'}
FORMAT = FORMATS[VERSION]
ALIGN = 64
CHECKSUM_BYTES = 32
_PREFIX = struct.Struct('<8sII')
TAPS = 9  # a 3x3 convolution, the default
# a convolution's kernel size and zero padding when its entry names none
DEFAULT_KSIZE = 3
DEFAULT_PAD = 1
MAX_KSIZE = 15
# of an input's pixel_thresholds (the first layer reads levels 0..n)
MAX_PIXEL_THRESHOLDS = 15
MAX_BITS = 4  # of a k-bit layer's weights and outputs
# what a reader parses of a header: a layer's entry is some 500 bytes, the
# deepest value (an array's shape) 5 levels down
MAX_HEADER_BYTES = 1 << 22
MAX_DEPTH = 16
# the largest integer a JSON number holds exactly
MAX_INTEGER = 2 ** 53 - 1
_CHUNK = 1 << 20  # bytes read at a time for the checksum and the gaps
_HEADER_KEYS = ('format', 'file_size', 'word_bits', 'bit_order', 'padding',
                'input', 'layers')
_LAYER_KEYS = ('name', 'kind', 'n_in', 'n_out', 'output', 'arrays')
# a layer's name: the trained model's link (l1, conv1_1, fc1)
_NAME = re.compile(r'[A-Za-z0-9_.-]{1,64}\Z')
# the header's strings (their brackets are no nesting) and its brackets
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(rb'[\[\]{}]')

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


def conv_geometry(conv):
    """``(ksize, pad)`` of a convolution's entry: its optional ``ksize``
    and ``pad``, :data:`DEFAULT_KSIZE` and :data:`DEFAULT_PAD` when
    absent."""
    return conv.get('ksize', DEFAULT_KSIZE), conv.get('pad', DEFAULT_PAD)


def conv_size(size, ksize, pad):
    """The size after a stride-1 convolution of ``ksize`` taps on ``size``
    values zero-padded by ``pad`` on each side."""
    return size + 2 * pad - ksize + 1


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
            (dense, :math:`\\pm 1` input), ``'conv_pixels'`` (k x k
            convolution of 8-bit pixels) or ``'conv_xnor'`` (k x k
            convolution of :math:`\\pm 1` feature maps); the k-bit
            ``'levels_pixels'``, ``'levels'`` (dense) and
            ``'conv_levels_pixels'``, ``'conv_levels'`` (3x3 convolutions,
            :mod:`qnn.packed.level_kernels`).
        n_in (int), n_out (int): Input and output values per image
            (a convolution's: channels x height x width).
        output (str): ``'sign'`` or ``'affine'``.
        weights (ndarray): ``uint64``: ``(n_out, ceil(n_in / 64))`` for a
            dense layer, ``(channels, k^2, ceil(in_channels / 64))`` for a
            convolution.
        thresholds (ndarray): ``int32`` ``(units or channels,)``
            (``'sign'``).
        flipped (ndarray): A convolution's ``uint8`` ``(channels,)``: 1
            where the weights are negated (:math:`\\gamma < 0`), which
            pools with the minimum.
        mean, inv_std, gamma, beta (ndarray): ``float32`` ``(n_out,)``
            (``'affine'``).
        conv (dict or None): A convolution's ``in_shape`` (channels,
            height, width), ``channels`` (out), ``pool`` (2x2 max
            pooling after it) and optionally ``ksize`` (k, 3 when absent)
            and ``pad`` (zero padding on each side, 1 when absent).
        levels (dict or None): A k-bit layer's ``weight_bits``,
            ``input_bits`` (8: pixels) and ``output_bits`` (``None`` for
            the output layer); see :mod:`qnn.packed.level_kernels`.
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
    def ksize(self):
        """A convolution's kernel size (:func:`conv_geometry`)."""
        return conv_geometry(self.conv)[0]

    @property
    def pad(self):
        """A convolution's zero padding on each side."""
        return conv_geometry(self.conv)[1]

    @property
    def taps(self):
        """A convolution's taps, ``ksize`` squared."""
        return self.ksize ** 2

    @property
    def conv_shape(self):
        """A convolution's (height, width) before pooling."""
        _, height, width = self.conv['in_shape']
        return (conv_size(height, self.ksize, self.pad),
                conv_size(width, self.ksize, self.pad))

    @property
    def out_shape(self):
        """A convolution's output (channels, height, width)."""
        height, width = self.conv_shape
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


def _where(index, layer):
    return 'layer {} ({})'.format(index + 1, layer.name)


def _check_layers(layers, input):
    """Raises :class:`PackedFileError` unless the layers chain up from the
    input (:func:`_check_geometry`) and hold the arrays their geometry
    implies (:func:`_check_arrays`)."""
    _check_geometry(layers, input)
    for index, layer in enumerate(layers):
        _check_arrays(layer, _where(index, layer))


def _check_geometry(layers, input):
    """Raises :class:`PackedFileError` unless the layers chain up from the
    input (a checked one: :func:`_check_input`): dense layers after the
    convolutions, the output layer last with a unit per class."""
    if not layers:
        raise PackedFileError('it has no layers')
    shape = tuple(input['shape'])
    for index, layer in enumerate(layers):
        where = _where(index, layer)
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
                                               expected_output == 'sign') or \
                (layer.levels is not None) != (layer.kind in LEVEL_KINDS):
            raise PackedFileError('{}: a {} layer with output {!r}{} in a '
                                  'network of {} layers'.format(
                                      where, layer.kind, layer.output,
                                      '' if layer.levels is None else
                                      ' and levels', layers[0].kind))
        if layer.kind in LEVEL_KINDS:
            _check_levels(layer, layers[index - 1] if index else None, where)
        if layer.kind in CONV_KINDS:
            shape = _check_conv(layer, shape, where)
        else:
            shape = _check_dense(layer, shape, where)
    classes = _dataset_info(input['dataset']).n_classes
    if layers[-1].n_out != classes:
        raise PackedFileError('{} has {} outputs for the {} classes of '
                              '{}'.format(_where(len(layers) - 1, layers[-1]),
                                          layers[-1].n_out, classes,
                                          input['dataset']))


def _check_levels(layer, previous, where):
    bits = layer.levels or {}
    expected_in = PIXEL_BITS if previous is None else \
        previous.levels['output_bits']
    out = bits.get('output_bits')
    if not 1 <= bits.get('weight_bits', 0) <= MAX_BITS or \
            bits.get('input_bits') != expected_in or \
            (out is None) != (layer.output == 'affine') or \
            out is not None and not 1 <= out <= MAX_BITS:
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
    if min(layer.conv_shape) < 1:
        raise PackedFileError('{}: a {}x{} convolution with padding {} of '
                              'an image of {}x{}'.format(
                                  where, layer.ksize, layer.ksize, layer.pad,
                                  height, width))
    if layer.kind in CONV_LEVEL_KINDS and \
            (layer.ksize, layer.pad) != (DEFAULT_KSIZE, DEFAULT_PAD):
        raise PackedFileError('{}: a k-bit convolution of {}x{} with padding '
                              '{}; this program runs them 3x3 with padding '
                              '1'.format(where, layer.ksize, layer.ksize,
                                         layer.pad))
    out = layer.out_shape
    if layer.n_in != channels * height * width or \
            layer.n_out != out[0] * out[1] * out[2] or out[0] < 1:
        raise PackedFileError('{} has {} inputs and {} outputs, not those '
                              'of its shapes'.format(where, layer.n_in,
                                                     layer.n_out))
    return out


def _check_dense(layer, shape, where):
    n = math.prod(shape)
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
        n_bits = layer.taps * layer.conv['in_shape'][0]
        shapes = {'weights': (channels, int(layer.levels['weight_bits']),
                              n_words(n_bits)),
                  'flipped': (channels,)}
    elif layer.kind in CONV_KINDS:
        channels = layer.conv['channels']
        n_bits = layer.conv['in_shape'][0]
        # 1 where the folding negated the channel's weights (gamma < 0):
        # its pooling takes the minimum (see qnn.packed.conv_kernels)
        shapes = {'weights': (channels, layer.taps, n_words(n_bits)),
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
    if 'flipped' in shapes and numpy.any(layer.arrays['flipped'] > 1):
        raise PackedFileError('{} has flipped values other than 0 and '
                              '1'.format(where))


def encode(network):
    """Returns the bytes of the file holding ``network``; raises
    :class:`PackedFileError` for a network that no reader would accept."""
    _check_input(network.input, VERSION)
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


def _shown(value):
    """``value`` for a one-line message, at most 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + '...'


def _object(value, where, required, optional=()):
    """Raises :class:`PackedFileError` unless ``value`` is a JSON object
    with the keys ``required`` and no others but ``optional``."""
    if type(value) is not dict:
        raise PackedFileError('{} is {}, not a JSON object'.format(
            where, _shown(value)))
    missing = sorted(set(required) - set(value))
    unknown = sorted(set(value) - set(required) - set(optional))
    if missing or unknown:
        raise PackedFileError('{} {}'.format(where, 'has no {}'.format(
            _shown(missing[0])) if missing else 'has an unknown key {}'.format(
                _shown(unknown[0]))))
    return value


def _integer(value, where, low, high=MAX_INTEGER):
    """``value`` if it is a JSON integer (not a float or a boolean) in
    ``[low, high]``."""
    if type(value) is not int or not low <= value <= high:
        raise PackedFileError('{} is {}, not an integer from {} to '
                              '{}'.format(where, _shown(value), low, high))
    return value


def _integers(value, where, length, low=1):
    if type(value) is not list or len(value) != length:
        raise PackedFileError('{} is {}, not a list of {} integers'.format(
            where, _shown(value), length))
    return [_integer(n, '{}[{}]'.format(where, i), low)
            for i, n in enumerate(value)]


def _number(value, where):
    if type(value) not in (int, float) or not math.isfinite(value):
        raise PackedFileError('{} is {}, not a finite number'.format(
            where, _shown(value)))
    return value


def _choice(value, where, choices):
    if type(value) is not str or value not in choices:
        raise PackedFileError('{} is {}, not one of {}'.format(
            where, _shown(value), ', '.join(choices)))
    return value


def _datasets():
    # imported when a file is read or written: qnn.datasets imports
    # Chainer, which the kernels that import this module do not need
    from qnn import datasets
    return datasets


def _dataset_info(name):
    return _datasets().get_info(name)


def _check_input(input, version):
    """The header's ``input`` with every key checked: a known data set,
    its image shape, ``size`` their product, 8-bit pixels, finite
    ``scale`` > 0 and ``shift``, the optional ``pixel_thresholds`` 1 to
    :data:`MAX_PIXEL_THRESHOLDS` ascending integers from 1 to 255;
    version 1's (MNIST, no ``dataset`` or
    ``shape``) gets them."""
    keys = ('size', 'pixel_bits', 'scale', 'shift')
    if version == 1:
        _object(input, 'input', keys)
        input = dict(input, dataset='mnist',
                     shape=list(_dataset_info('mnist').shape))
    _object(input, 'input', keys + ('dataset', 'shape'),
            ('pixel_thresholds',))
    info = _dataset_info(_choice(input['dataset'], 'input.dataset',
                                 _datasets().NAMES))
    if _integers(input['shape'], 'input.shape', 3) != list(info.shape):
        raise PackedFileError('input.shape is {}, but a {} image is '
                              '{}'.format(_shown(input['shape']), info.label,
                                          list(info.shape)))
    if _integer(input['size'], 'input.size', 1) != info.in_size:
        raise PackedFileError('input.size is {}, not the {} values of an '
                              'image of {}'.format(input['size'],
                                                   info.in_size,
                                                   input['shape']))
    if _integer(input['pixel_bits'], 'input.pixel_bits', 1) != 8:
        raise PackedFileError('input of {} bits per pixel; this program '
                              'reads 8'.format(input['pixel_bits']))
    if _number(input['scale'], 'input.scale') <= 0:
        raise PackedFileError('input.scale is {}, not positive'.format(
            input['scale']))
    _number(input['shift'], 'input.shift')
    if 'pixel_thresholds' in input:
        _check_pixel_thresholds(input['pixel_thresholds'])
    return input


def _check_pixel_thresholds(thresholds):
    where = 'input.pixel_thresholds'
    if type(thresholds) is not list or \
            not 1 <= len(thresholds) <= MAX_PIXEL_THRESHOLDS:
        raise PackedFileError('{} is {}, not a list of 1 to {} '
                              'integers'.format(where, _shown(thresholds),
                                                MAX_PIXEL_THRESHOLDS))
    low = 1
    for i, t in enumerate(thresholds):
        low = _integer(t, '{}[{}]'.format(where, i), low, PIXEL_MAX) + 1


def input_values(input, pixels):
    """What the first layer reads of the ``uint8`` ``pixels``: the pixels,
    or with ``input['pixel_thresholds']`` (ascending) the number of them
    that each pixel reaches (``uint8``).

    .. math::

        v = \\sum_m [p \\ge t_m]
    """
    if 'pixel_thresholds' not in input:
        return pixels
    values = numpy.zeros(numpy.shape(pixels), numpy.uint8)
    for t in input['pixel_thresholds']:
        values += pixels >= t
    return values


def _check_conv_entry(conv, where):
    _object(conv, where, ('in_shape', 'channels', 'pool'), ('ksize', 'pad'))
    _integers(conv['in_shape'], where + '.in_shape', 3)
    _integer(conv['channels'], where + '.channels', 1)
    ksize = _integer(conv.get('ksize', DEFAULT_KSIZE), where + '.ksize', 1,
                     MAX_KSIZE)
    _integer(conv.get('pad', DEFAULT_PAD), where + '.pad', 0, ksize - 1)
    if type(conv['pool']) is not bool:
        raise PackedFileError('{}.pool is {}, not true or false'.format(
            where, _shown(conv['pool'])))


def _check_levels_entry(levels, where):
    _object(levels, where, ('weight_bits', 'input_bits', 'output_bits'))
    _integer(levels['weight_bits'], where + '.weight_bits', 1, MAX_BITS)
    _integer(levels['input_bits'], where + '.input_bits', 1, 8)
    if levels['output_bits'] is not None:
        _integer(levels['output_bits'], where + '.output_bits', 1, MAX_BITS)


def _layer_of(entry, index, version):
    """The layer of the header's entry ``index`` without its arrays, and
    the entry's ``{name: (dtype, shape, offset)}``; every value checked
    for its type and range."""
    where = 'layer {}'.format(index + 1)
    _object(entry, where, _LAYER_KEYS, ('conv', 'levels'))
    name = entry['name']
    if type(name) is not str or not _NAME.match(name):
        raise PackedFileError('{} has the name {}'.format(
            where, _shown(name)))
    where = 'layer {} ({})'.format(index + 1, name)
    _choice(entry['kind'], where + ' kind',
            DENSE_KINDS if version == 1 else KINDS)
    _integer(entry['n_in'], where + ' n_in', 1)
    _integer(entry['n_out'], where + ' n_out', 1)
    _choice(entry['output'], where + ' output', tuple(_OUTPUT_ARRAYS))
    if entry.get('conv') is not None:
        _check_conv_entry(entry['conv'], where + ' conv')
    if entry.get('levels') is not None:
        _check_levels_entry(entry['levels'], where + ' levels')
    specs = {}
    for array, spec in _object(entry['arrays'], where + ' arrays', (),
                               tuple(_ARRAYS)).items():
        at = '{} {}'.format(where, array)
        _object(spec, at, ('dtype', 'shape', 'offset'))
        _choice(spec['dtype'], at + ' dtype', (_ARRAYS[array],))
        if type(spec['shape']) is not list or not 1 <= len(spec['shape']) <= 3:
            raise PackedFileError('{} shape is {}'.format(
                at, _shown(spec['shape'])))
        specs[array] = (spec['dtype'], tuple(_integers(
            spec['shape'], at + ' shape', len(spec['shape']))),
            _integer(spec['offset'], at + ' offset', 0))
    layer = Layer(name, entry['kind'], entry['n_in'], entry['n_out'],
                  entry['output'], None, conv=entry.get('conv'),
                  levels=entry.get('levels'))
    return layer, specs


def _check_header(header, version):
    """``(input, layers, specs)`` of a parsed header: the checked input
    (:func:`_check_input`), the layers without their arrays, chained up
    (:func:`_check_geometry`), and for each its arrays' ``{name: (dtype,
    shape, offset)}``, each of the shape its layer implies."""
    _object(header, 'the header', _HEADER_KEYS, ('source',))
    if header['format'] != FORMATS[version] or \
            header['word_bits'] != WORD_BITS or \
            header['bit_order'] != 'little' or header['padding'] != 'zero':
        raise PackedFileError('unsupported header {}'.format(
            {k: _shown(header[k]) for k in ('format', 'word_bits',
                                            'bit_order', 'padding')}))
    if type(header.get('source', {})) is not dict:
        raise PackedFileError('source is {}, not a JSON object'.format(
            _shown(header['source'])))
    input = _check_input(header['input'], version)
    if type(header['layers']) is not list:
        raise PackedFileError('layers is {}, not a list'.format(
            _shown(header['layers'])))
    entries = [_layer_of(entry, index, version)
               for index, entry in enumerate(header['layers'])]
    layers = [layer for layer, _ in entries]
    specs = [spec for _, spec in entries]
    _check_geometry(layers, input)
    for index, (layer, spec) in enumerate(zip(layers, specs)):
        shapes, _ = _expected_shapes(layer)
        found = {name: shape for name, (_, shape, _) in spec.items()}
        if found != shapes:
            raise PackedFileError('{} has arrays {}, expected {}'.format(
                _where(index, layer), _shown(found)[:200], shapes))
    return input, layers, specs


def _parse_header(text):
    """The header's JSON, parsed only if it is no deeper than
    :data:`MAX_DEPTH` (a deep nesting would exhaust the parser's stack)
    and holds no NaN or Infinity."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub(b'""', text)):
        depth += 1 if bracket in b'[{' else -1
        deepest = max(depth, deepest)
    if deepest > MAX_DEPTH:
        raise PackedFileError('damaged header (JSON nested {} deep, more '
                              'than {})'.format(deepest, MAX_DEPTH))

    def refuse(constant):
        raise ValueError('{} is no JSON number'.format(constant))

    try:
        header = json.loads(text.decode('utf-8'), parse_constant=refuse)
    except (ValueError, RecursionError):
        raise PackedFileError('damaged header (not the JSON layer table)')
    if type(header) is not dict:
        raise PackedFileError('damaged header (not the JSON layer table)')
    return header


def _read_exactly(f, offset, count):
    f.seek(offset)
    data = f.read(count)
    if len(data) != count:  # it shrank while it was read
        raise PackedFileError('truncated while it was read')
    return data


def _check_checksum(f, end):
    """Raises unless the SHA-256 of the ``end`` bytes before the checksum
    is the checksum; reads them in chunks."""
    digest = hashlib.sha256()
    f.seek(0)
    for start in range(0, end, _CHUNK):
        digest.update(_read_exactly(f, start, min(_CHUNK, end - start)))
    if digest.digest() != _read_exactly(f, end, CHECKSUM_BYTES):
        raise PackedFileError('damaged (SHA-256 checksum mismatch)')


def _check_zeros(f, start, end, what):
    for lo in range(start, end, _CHUNK):
        data = _read_exactly(f, lo, min(_CHUNK, end - lo))
        if data.count(0) != len(data):
            raise PackedFileError('nonzero bytes {}, at {}'.format(
                what, lo + len(data) - len(data.lstrip(b'\0'))))


def _read_arrays(f, layers, specs, header_end, body_end):
    """``[{name: array}]`` of each layer, read from their offsets after
    checking that these are multiples of 64, after the header, inside the
    body, do not overlap, and that every byte between them is zero."""
    regions = sorted((offset, index, name, numpy.dtype(dtype), shape)
                     for index, spec in enumerate(specs)
                     for name, (dtype, shape, offset) in spec.items())
    position = header_end
    for offset, index, name, dtype, shape in regions:
        nbytes = math.prod(shape) * dtype.itemsize
        if offset % ALIGN or offset < position or \
                offset + nbytes > body_end:
            raise PackedFileError(
                '{} {} at offset {} ({} bytes) is {}'.format(
                    _where(index, layers[index]), name, offset, nbytes,
                    'not a multiple of {}'.format(ALIGN) if offset % ALIGN
                    else 'outside the file' if offset + nbytes > body_end
                    else 'inside the header' if offset < header_end else
                    'over the array before it'))
        position = offset + nbytes
    arrays = [{} for _ in layers]
    position = header_end
    for offset, index, name, dtype, shape in regions:
        nbytes = math.prod(shape) * dtype.itemsize
        _check_zeros(f, position, offset, 'before {} {}'.format(
            _where(index, layers[index]), name))
        array = numpy.empty(shape, dtype)
        f.seek(offset)
        if f.readinto(array.reshape(-1).view(numpy.uint8)) != nbytes:
            raise PackedFileError('truncated while it was read')
        arrays[index][name] = array.astype(dtype.newbyteorder('='),
                                           copy=False)
        position = offset + nbytes
    _check_zeros(f, position, body_end, 'after the last array')
    return arrays


def _read(f, size):
    """The network in the open file ``f`` of ``size`` bytes: the prefix,
    the header (bounded, then parsed), the size it declares, the checksum,
    every field (:func:`_check_header`), the layout, the arrays
    (:func:`_check_arrays`)."""
    prefix = f.read(_PREFIX.size)
    if len(prefix) < len(MAGIC) or prefix[:len(MAGIC)] != MAGIC:
        raise PackedFileError('not a packed network file (no {} magic '
                              'number)'.format(FORMAT))
    if size < _PREFIX.size + CHECKSUM_BYTES:
        raise PackedFileError('truncated ({} bytes)'.format(size))
    _, version, header_length = _PREFIX.unpack(prefix)
    if version not in FORMATS:
        raise PackedFileError('format version {}; this program reads '
                              'versions {}'.format(version, ', '.join(
                                  str(v) for v in sorted(FORMATS))))
    if header_length > MAX_HEADER_BYTES:
        raise PackedFileError('damaged header ({} bytes long, more than '
                              '{})'.format(header_length, MAX_HEADER_BYTES))
    header_end = _PREFIX.size + header_length
    if header_end + CHECKSUM_BYTES > size:
        raise PackedFileError('truncated ({} bytes, shorter than its '
                              'header says)'.format(size))
    header = _parse_header(_read_exactly(f, _PREFIX.size, header_length))
    expected = header.get('file_size')
    if type(expected) is not int:
        raise PackedFileError('damaged header (file_size is {})'.format(
            _shown(expected)))
    if size < expected:
        raise PackedFileError('truncated ({} bytes of {})'.format(
            size, expected))
    if size > expected:
        raise PackedFileError('{} bytes after its end'.format(
            size - expected))
    body_end = size - CHECKSUM_BYTES
    _check_checksum(f, body_end)
    if body_end % ALIGN:
        raise PackedFileError('{} bytes before the checksum, not a '
                              'multiple of {}'.format(body_end, ALIGN))
    input, layers, specs = _check_header(header, version)
    arrays = _read_arrays(f, layers, specs, header_end, body_end)
    layers = [Layer(layer.name, layer.kind, layer.n_in, layer.n_out,
                    layer.output, conv=layer.conv, levels=layer.levels,
                    **found) for layer, found in zip(layers, arrays)]
    for index, layer in enumerate(layers):
        _check_arrays(layer, _where(index, layer))
    return PackedNetwork(layers, input, header.get('source'), size)


def decode(data):
    """Parses the bytes of a file; raises :class:`PackedFileError` saying
    what is wrong (foreign, truncated, damaged, unknown version, any field
    of the wrong type or range, arrays misplaced or of the wrong shape)."""
    return _read(io.BytesIO(data), len(data))


def load(path):
    """Reads the file ``path`` as :func:`decode` does, a part at a time:
    nothing is read before it is known to be needed, so a file of any size
    costs at most its arrays; raises :class:`PackedFileError` (also for a
    file that is not a regular file or cannot be read)."""
    try:
        with input_files.open_regular(path) as f:
            return _read(f, input_files.size_of(f))
    except OSError as e:
        raise PackedFileError('cannot read it: {}'.format(
            e.strerror or e))


def save(path, network, inputs=()):
    """Writes ``network`` to ``path`` all or nothing (a temporary file in
    the same directory renamed over it), over no file that
    :func:`qnn.utils.atomic_files.check_output` refuses (``inputs``: the
    files the caller reads); raises ``OSError``."""
    data = encode(network)
    atomic_files.write_atomically(path, lambda f: f.write(data), inputs)
    return len(data)

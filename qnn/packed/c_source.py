"""A packed network as dependency-free C99 source (``export.py --format c``).

:func:`generate` turns a :class:`qnn.packed.format.PackedNetwork` into three
files: ``qnn_model.h`` (the interface: ``QNN_INPUT_SIZE``,
``QNN_CLASSES``, ``QNN_SCRATCH_WORDS``, ``qnn_predict``), ``qnn_model.c``
and a ``README.md`` saying how to build and call it and the memory it
needs. The source includes ``<stdint.h>`` only (a compiler may still call
``memset`` for a loop that clears memory): no allocation, no I/O, no
global written at run time. The weights, thresholds and the output
layer's affine map are ``static const`` arrays (flash on a
microcontroller); the activations live in a scratch buffer of
``QNN_SCRATCH_WORDS`` 64-bit words, on the stack of :c:func:`qnn_predict`
or passed to :c:func:`qnn_predict_scratch`.

The arithmetic is the packed format's (docs/deployment.md): exact integer
sums from popcounts of the weight and activation bits (the same identities
as :mod:`qnn.packed.kernels` and :mod:`qnn.packed.levels`), the thresholds
counted, and the output layer's float32 operations in the order of
:func:`qnn.packed.kernels.affine_logits`, so the logits equal the packed
network's bit for bit on any target whose ``float`` is IEEE binary32
evaluated without excess precision or fused multiply-adds.

Layouts in the C source (activations in the scratch buffer, weights
rearranged here so that each access is whole words):

* a dense layer's input: its values' bits, or planes of them, as in the
  file: ``planes`` of ``ceil(n / 64)`` words (bit ``b`` of value ``i`` is
  bit ``i % 64`` of word ``i / 64`` of plane ``b``; one plane for
  :math:`\\pm 1` values, 8 for pixels, ``k_a`` for activation levels);
* a convolution's output (a feature map of bits or levels): per plane,
  its (row, column) positions, each holding its channels in
  ``ceil(channels / 64)`` words; a dense layer after it has its weights
  spread to the same positions (the padding bits are 0 on both sides, so
  the sums are unchanged);
* a k-bit convolution's weight levels: per output channel and plane,
  each tap's channels in ``ceil(channels / 64)`` words (the file holds
  them over the 9 C values of a filter);
* a convolution of pixels: its taps as ``int8_t`` values (the file's
  :math:`\\pm 1` bits or :math:`2v - L_w` levels), the pixels read in
  place.
"""
import re
import string

import numpy

from qnn.packed import c_templates as templates
from qnn.packed.bits import PIXEL_BITS
from qnn.packed.bits import WORD_BITS
from qnn.packed.bits import n_words
from qnn.packed.bits import pack_bits
from qnn.packed.bits import unpack_bits
from qnn.packed.bits import unpack_levels
from qnn.packed.format import CONV_KINDS
from qnn.packed.format import KINDS

FILES = ('qnn_model.h', 'qnn_model.c', 'README.md')
# the dense kinds, binary and k-bit
DENSE_KINDS = tuple(kind for kind in KINDS if kind not in CONV_KINDS)
INT32_LIMIT = 2 ** 31 - 1
# the units of a dense layer summed together (see c_templates.DENSE_XNOR)
BLOCK = 16
# the stack of a call besides its scratch and the convolutions' local
# arrays is below this (the tests measure it with -fstack-usage)
STACK_BYTES = 512
PIXEL_KINDS = ('planes', 'levels_pixels', 'conv_pixels', 'conv_levels_pixels')
# compiler options that keep the float32 output layer exact, for the README
EXACT_FLAGS = '-ffp-contract=off'
# how the README builds the model for each target
BUILDS = (
    ('x86-64, AArch64 (gcc or clang)',
     'gcc -std=c99 -O2 -ffp-contract=off -c qnn_model.c  '
     '# add -march=native for POPCNT on x86-64'),
    ('Cortex-M4 (arm-none-eabi-gcc, newlib)',
     'arm-none-eabi-gcc -std=c99 -mcpu=cortex-m4 -mthumb '
     '-mfloat-abi=hard -mfpu=fpv4-sp-d16 -Os -ffp-contract=off '
     '-c qnn_model.c'),
    ('WebAssembly (clang and lld)',
     'clang --target=wasm32 -std=c99 -O2 -ffp-contract=off -nostdlib '
     '-c qnn_model.c  # link with wasm-ld beside a memset'),
)


class UnsupportedNetwork(ValueError):
    """The network has something the C source cannot hold; the message
    says what."""


def fill(text, **values):
    """``text`` with its ``$NAME`` placeholders replaced."""
    return string.Template(text).substitute(values)


def comment_text(value):
    """``value`` as text safe in a C comment and a Markdown table: the
    names in a file are data, not code (no ``*/``, no backslash)."""
    return re.sub(r'[^A-Za-z0-9 _.,:;=+()\[\]<>#%-]', '_', str(value))[:200]


# --- bits -------------------------------------------------------------------

def spread_to_positions(words, positions, channels):
    """Words over ``positions * channels`` values in (position, channel)
    order, rearranged so that each position's channels start a word:
    ``(..., positions * ceil(channels / 64))``."""
    lead = words.shape[:-1]
    bits = unpack_bits(words, positions * channels).reshape(
        lead + (positions, channels))
    return pack_bits(bits).reshape(lead + (positions * n_words(channels),))


# --- the plan: each layer's input, output and C arrays -----------------------

class CLayer(object):

    """One packed layer as the C source computes it.

    Attributes:
        layer: The :class:`qnn.packed.format.Layer`.
        index (int): 1 for the first layer.
        in_planes (int): Planes of its input (8 for pixels; 0: a
            convolution reading the pixels in place).
        in_words (int): Words of each input plane.
        out_planes (int): Planes of its output (0: the logits).
        out_words (int): Words of each output plane.
        arrays (list): ``(C type, suffix, values)`` of its constant arrays.
    """

    def __init__(self, layer, index, previous):
        self.layer = layer
        self.index = index
        self.name = 'layer{}'.format(index)
        kind = layer.kind
        bits = layer.levels or {}
        self.weight_planes = int(bits.get('weight_bits', 1))
        self.weight_levels = 2 ** self.weight_planes - 1
        self.input_levels = 2 ** bits.get('input_bits', 1) - 1
        if previous is None:
            self.in_planes = PIXEL_BITS if kind in DENSE_KINDS else 0
            self.in_words = n_words(layer.n_in)
        else:
            self.in_planes = previous.out_planes
            self.in_words = previous.out_words
        if layer.output == 'affine':
            self.out_planes = 0
        elif layer.output == 'levels':
            self.out_planes = int(bits['output_bits'])
        else:
            self.out_planes = 1
        if kind in CONV_KINDS:
            channels, height, width = layer.out_shape
            self.out_words = height * width * n_words(channels)
        else:
            self.out_words = n_words(layer.n_out)
        self.arrays = self._weights(previous) + self._outputs()

    def _weights(self, previous):
        """The weights in the C layout (see the module's docstring)."""
        layer, kind = self.layer, self.layer.kind
        weights = layer.weights
        if kind in ('conv_pixels', 'conv_levels_pixels'):
            return [('int8_t', 'taps', pixel_taps(layer))]
        if kind in CONV_KINDS:
            channels = layer.conv['in_shape'][0]
            if kind == 'conv_levels':  # planes over (tap, channel) values
                planes = spread_to_positions(weights, 9, channels)
            else:  # (K, 9, Q): one plane
                planes = weights.reshape((len(weights), 1, -1))
            # (K, planes, 9 taps, Q words) to (planes, 9, Q, K)
            return [('uint64_t', 'weights', planes.reshape(
                planes.shape[:2] + (9, n_words(channels))).transpose(
                    1, 2, 3, 0))]
        if previous is not None and previous.layer.kind in CONV_KINDS:
            channels, height, width = previous.layer.out_shape
            weights = spread_to_positions(weights, height * width, channels)
        return [('uint64_t', 'weights', unit_blocks(weights))]

    def _outputs(self):
        layer = self.layer
        if layer.output == 'affine':
            return [('float', name, getattr(layer, name))
                    for name in ('mean', 'inv_std', 'gamma', 'beta')]
        arrays = [('int32_t', 'thresholds', layer.thresholds)]
        if layer.kind in CONV_KINDS and layer.conv['pool']:
            arrays.append(('uint8_t', 'flipped', layer.flipped))
        return arrays

    @property
    def thresholds_per_unit(self):
        return self.layer.thresholds.size // (
            self.layer.conv['channels'] if self.layer.kind in CONV_KINDS
            else self.layer.n_out)

    def title(self):
        layer = self.layer
        if layer.kind in CONV_KINDS:
            shape = 'x'.join(str(v) for v in layer.conv['in_shape'])
            size = '{} -> {} channels, 3x3, pad 1{}'.format(
                shape, layer.conv['channels'],
                ', 2x2 max pooling' if layer.conv['pool'] else '')
        else:
            size = '{} -> {}'.format(layer.n_in, layer.n_out)
        bits = ''
        if layer.levels:
            bits = ', {}-bit weights'.format(layer.levels['weight_bits'])
        output = {'affine': 'logits', 'sign': 'sign',
                  'levels': '{}-bit levels'.format(
                      (layer.levels or {}).get('output_bits'))}[layer.output]
        return 'layer {} ({}): {}, {}{}, {}'.format(
            self.index, comment_text(layer.name), layer.kind, size, bits,
            output)


def unit_blocks(weights):
    """A dense layer's weights ``(units, [planes,] words)`` in blocks of
    ``BLOCK`` units, each stored (planes, words, units); the last block
    padded with units of zero weights."""
    units = len(weights)
    weights = weights.reshape((units, -1, weights.shape[-1]))
    blocks = -(-units // BLOCK)
    padded = numpy.zeros((blocks * BLOCK,) + weights.shape[1:], numpy.uint64)
    padded[:units] = weights
    return padded.reshape((blocks, BLOCK) + weights.shape[1:]).transpose(
        0, 2, 3, 1)


def pixel_taps(layer):
    """A convolution of pixels' weights as ``int8`` values (:math:`\\pm
    1`, or :math:`2v - L_w`) ``(9, C, K)``: taps, input channels, output
    channels."""
    K = layer.conv['channels']
    C = layer.conv['in_shape'][0]
    if layer.kind == 'conv_pixels':
        values = 2 * unpack_bits(layer.weights, C).astype(numpy.int64) - 1
    else:  # planes over the 9 C values of a filter, (tap, channel) order
        L_w = 2 ** layer.levels['weight_bits'] - 1
        values = 2 * unpack_levels(layer.weights, 9 * C).reshape(
            K, 9, C) - L_w
    return values.transpose(1, 2, 0).astype(numpy.int8)


def plan(network):
    """The :class:`CLayer` s of ``network``; raises
    :class:`UnsupportedNetwork` for a layer kind the C source lacks or
    sums beyond ``int32``."""
    if 'pixel_thresholds' in network.input:
        raise UnsupportedNetwork(
            'the network reads levels of its pixels (input.pixel_thresholds)'
            ', which the C source does not compute')
    layers = []
    for index, layer in enumerate(network.layers, 1):
        if layer.conv is not None and (layer.ksize, layer.pad) != (3, 1):
            raise UnsupportedNetwork(
                'layer {} ({}) is a {}x{} convolution with padding {}; the '
                'C source computes 3x3 ones with padding 1'.format(
                    index, comment_text(layer.name), layer.ksize,
                    layer.ksize, layer.pad))
        if layer.kind not in DENSE_KINDS + CONV_KINDS:
            raise UnsupportedNetwork(
                'layer {} ({}) is of kind {!r}, which the C source does not '
                'compute (it computes {})'.format(
                    index, comment_text(layer.name),
                    comment_text(layer.kind),
                    ', '.join(DENSE_KINDS + CONV_KINDS)))
        layers.append(CLayer(layer, index, layers[-1] if layers else None))
    for c_layer in layers:
        check_ranges(c_layer)
    return layers


def check_ranges(c_layer):
    """Raises :class:`UnsupportedNetwork` if a sum of the layer could pass
    ``int32``: the C source computes in ``int32_t``."""
    layer = c_layer.layer
    L_w, L_a = c_layer.weight_levels, c_layer.input_levels
    if layer.kind in CONV_KINDS:
        values = 9 * layer.conv['in_shape'][0]
    else:
        values = layer.n_in
    if layer.kind in PIXEL_KINDS:
        bound = 3 * 255 * values * L_w
    elif layer.kind in ('xnor', 'conv_xnor'):
        bound = values
    else:
        bound = 9 * values * L_a * L_w
    if bound > INT32_LIMIT or c_layer.out_words * max(
            c_layer.out_planes, 1) > INT32_LIMIT:
        raise UnsupportedNetwork(
            'layer {} ({}) has sums of up to {} in magnitude, beyond the '
            'int32_t arithmetic of the C source'.format(
                c_layer.index, comment_text(layer.name), bound))


# --- the source -------------------------------------------------------------

def c_array(ctype, name, values):
    """``static const ctype name[n] = {...};`` holding ``values`` exactly
    (floats as hexadecimal literals)."""
    flat = numpy.asarray(values).ravel()
    if ctype == 'uint64_t':
        items, per_line = ['0x{:016x}'.format(int(v)) for v in flat], 4
    elif ctype == 'float':
        # exact: a float32 is a double, written in hexadecimal
        items = [re.sub(r'\.?0*p', 'p', float(numpy.float32(v)).hex()) + 'f'
                 for v in flat]
        per_line = 3
    elif ctype == 'int32_t':
        # -2147483648 is no int literal: it is minus 2147483648
        items = ['(-2147483647 - 1)' if int(v) == -2 ** 31 else str(int(v))
                 for v in flat]
        per_line = 8
    else:
        items, per_line = [str(int(v)) for v in flat], 16
    lines = [', '.join(items[i:i + per_line])
             for i in range(0, len(items), per_line)]
    return 'static const {} {}[{}] = {{\n    {}\n}};\n'.format(
        ctype, name, len(items), ',\n    '.join(lines))


def emit(c_layer, index, unit):
    """The C statement that turns the sum ``s`` of output value ``index``
    (a bit position in each output plane) of ``unit`` into the layer's
    output ``out``."""
    array = c_layer.name
    if c_layer.layer.output == 'affine':
        return ('out[{u}] = qnn_affine(s, {a}_mean[{u}], {a}_inv_std[{u}], '
                '{a}_gamma[{u}], {a}_beta[{u}]);'.format(u=unit, a=array))
    count = c_layer.thresholds_per_unit
    return ('qnn_put_level(out, {}, {}, {}, s, {}_thresholds + {} * {}, '
            '{});'.format(c_layer.out_planes, c_layer.out_words, index,
                          array, unit, count, count))


def dense_source(c_layer):
    layer = c_layer.layer
    values = dict(TITLE=c_layer.title(), FN=c_layer.name,
                  ARRAY=c_layer.name, N_IN=layer.n_in, N_OUT=layer.n_out,
                  WORDS=c_layer.in_words, BLOCK=BLOCK,
                  OUT_TYPE='float' if c_layer.out_planes == 0 else 'uint64_t',
                  EMIT=emit(c_layer, 'j', 'j'), ZERO='')
    if c_layer.out_planes:
        values['ZERO'] = '    qnn_zero(out, {});\n'.format(
            c_layer.out_planes * c_layer.out_words)
    if layer.kind == 'xnor':
        return fill(templates.DENSE_XNOR, **values)
    L_w, L_a = c_layer.weight_levels, c_layer.input_levels
    values.update(IN_PLANES=c_layer.in_planes,
                  W_PLANES=c_layer.weight_planes, DECLARE_TOTAL_V='',
                  ADD_TOTAL_V='')
    if layer.kind in PIXEL_KINDS:
        values['SUM'] = '2 * dot[j - j0] - {} * total_x'.format(L_w)
        values['SUM_TEXT'] = '2 dot - {} sum(x)'.format(L_w)
    else:
        values['SUM'] = ('4 * dot[j - j0] - {} * total_x - {} * total_v[j - '
                         'j0] + {}'.format(2 * L_w, 2 * L_a,
                                           layer.n_in * L_a * L_w))
        values['SUM_TEXT'] = ('sum (2u - {})(2v - {}) = 4 dot - {} sum(u) - '
                              '{} sum(v) + {}'.format(
                                  L_a, L_w, 2 * L_w, 2 * L_a,
                                  layer.n_in * L_a * L_w))
        values['DECLARE_TOTAL_V'] = fill(templates.DECLARE_TOTAL_V, **values)
        values['ADD_TOTAL_V'] = fill(templates.ADD_TOTAL_V, **values)
    return fill(templates.DENSE_PLANES, **values)


def conv_source(c_layer):
    layer = c_layer.layer
    C, H, W = layer.conv['in_shape']
    K, H2, W2 = layer.out_shape
    Q = n_words(C)
    L_w, L_a = c_layer.weight_levels, c_layer.input_levels
    pool = layer.conv['pool']
    values = dict(TITLE=c_layer.title(), FN=c_layer.name,
                  ARRAY=c_layer.name, C=C, H=H, W=W, Q=Q, K=K, H2=H2, W2=W2,
                  PLANE_WORDS=c_layer.in_words, IN_PLANES=c_layer.in_planes,
                  W_PLANES=c_layer.weight_planes, TWO_LA=2 * L_a,
                  OUT_WORDS=c_layer.out_planes * c_layer.out_words,
                  IN_TYPE='uint8_t' if layer.kind in PIXEL_KINDS
                  else 'uint64_t',
                  EMIT=emit(c_layer, '(y2 * {} + x2) * {} + k'.format(
                      W2, n_words(K) * WORD_BITS), 'k'),
                  BEFORE_TAPS='                taps = 0;\n')
    if layer.kind in PIXEL_KINDS:
        values.update(
            LOCALS=', c', TAP=templates.PIXELS_TAP, SUM='acc[k]',
            BEFORE_TAPS='', SUM_TEXT='s = sum of pixel x weight over the '
            'channels and the taps inside the image')
    elif layer.kind == 'conv_xnor':
        values.update(
            LOCALS=', q, taps', TAP=templates.XNOR_TAP,
            SUM='taps * {} - 2 * acc[k]'.format(C),
            SUM_TEXT='s = sum over the taps inside the image of {} - 2 '
            'popcount(x xor w)'.format(C))
    else:
        values.update(
            LOCALS=', q, b, c, taps, total_u', TAP=templates.LEVELS_TAP,
            SUM='acc[k] - {} * total_u + taps * {}'.format(
                2 * L_w, C * L_a * L_w),
            SUM_TEXT='s = sum over the taps inside the image of (2u - {})'
            '(2v - {}) = 4 dot - {} sum(u) - {} sum(v) + {} per tap'.format(
                L_a, L_w, 2 * L_w, 2 * L_a, C * L_a * L_w))
        values['BEFORE_TAPS'] += '                total_u = 0;\n'
    values['TAP'] = fill(values['TAP'], **values)
    values['WINDOW'] = fill(templates.WINDOW_POOLED if pool
                            else templates.WINDOW_PLAIN, **values)
    values['KEEP'] = fill(templates.KEEP_POOLED if pool
                          else templates.KEEP_PLAIN, **values)
    return fill(templates.CONV_LAYER, **values)


def stack_bytes(layers):
    """A bound on the stack of a call besides its scratch: the local arrays
    of every layer (a dense layer's sums of a block of units, a
    convolution's two ``int32_t`` per channel and the words of one input
    position; a compiler may inline every layer into one frame) and
    ``STACK_BYTES`` for the rest."""
    return STACK_BYTES + 8 * BLOCK * len(layers) + sum(
        8 * (c_layer.layer.conv['channels'] + c_layer.in_planes)
        for c_layer in layers if c_layer.layer.kind in CONV_KINDS)


def scratch_plan(layers):
    """``(words of region 0, words of region 1)``: layer ``i`` (from 0)
    writes its output to region ``i % 2`` and reads the other; the pixel
    planes of a dense first layer are in region 1."""
    sizes = [0, 0]
    if layers[0].in_planes:
        sizes[1] = layers[0].in_planes * layers[0].in_words
    for i, c_layer in enumerate(layers[:-1]):
        sizes[i % 2] = max(sizes[i % 2], c_layer.out_planes *
                           c_layer.out_words)
    return sizes


def predict_body(layers, sizes):
    region = ('scratch', 'scratch + {}'.format(sizes[0]))
    lines = []
    first = layers[0]
    if first.in_planes:
        lines.append('qnn_pixel_planes(pixels, {}, {}, {});'.format(
            first.layer.n_in, first.in_words, region[1]))
        source = region[1]
    else:
        source = 'pixels'
    for i, c_layer in enumerate(layers):
        target = 'logits' if c_layer.out_planes == 0 else region[i % 2]
        lines.append('{}({}, {});'.format(c_layer.name, source, target))
        source = target
    return ''.join('    {}\n'.format(line) for line in lines)


def model_source(network, layers):
    sizes = scratch_plan(layers)
    parts = [describe(network, layers, ' * '), templates.PRELUDE,
             templates.POPCOUNT, templates.AFFINE]
    if len(layers) > 1:
        parts.append(templates.ZERO)
    if len(layers) > 1:
        parts.append(templates.PUT_LEVEL)
    if layers[0].in_planes:
        parts.append(templates.PIXEL_PLANES)
    for c_layer in layers:
        parts.append('\n/* {} */\n'.format(c_layer.title()))
        parts.extend(c_array(ctype, '{}_{}'.format(c_layer.name, suffix),
                             values)
                     for ctype, suffix, values in c_layer.arrays)
    for c_layer in layers:
        parts.append(conv_source(c_layer) if c_layer.layer.kind in CONV_KINDS
                     else dense_source(c_layer))
    parts.append(fill(templates.PREDICT, BODY=predict_body(layers, sizes)))
    return ''.join(parts)


def describe(network, layers, prefix):
    """The comment at the top of ``qnn_model.c``: where the network comes
    from and its layers."""
    source = network.source or {}
    lines = ['qnn_model.c: {}'.format(title(network)),
             'Generated by export.py --format c from {}; see '
             'README.md.'.format(comment_text(
                 source.get('snapshot', 'a packed network'))),
             '']
    lines += [c_layer.title() for c_layer in layers]
    return '/*\n' + ''.join((prefix + line).rstrip() + '\n'
                             for line in lines) + ' */\n'


def title(network):
    config = (network.source or {}).get('config') or {}
    parts = [comment_text(config.get('arch') or 'mlp'),
             comment_text(network.input.get('dataset', 'mnist'))]
    return 'a packed {} network for {}'.format(*parts)


def input_shape(network):
    shape = network.input.get('shape') or [1, 1, network.input['size']]
    return [int(v) for v in shape]


def header_source(network, layers):
    channels, height, width = input_shape(network)
    sizes = scratch_plan(layers)
    return fill(templates.HEADER, TITLE=title(network),
                SHAPE_TEXT='{} x {} x {}'.format(channels, height, width),
                INPUT_SIZE=network.input['size'], CHANNELS=channels,
                HEIGHT=height, WIDTH=width,
                CLASSES=network.layers[-1].n_out,
                SCRATCH_WORDS=max(1, sum(sizes)))


def constant_bytes(layers):
    """Bytes of the constant arrays (weights, thresholds, output map)."""
    return sum(numpy.asarray(values).size * {
        'uint64_t': 8, 'float': 4, 'int32_t': 4}.get(ctype, 1)
        for c_layer in layers for ctype, _, values in c_layer.arrays)


def readme(network, layers):
    sizes = scratch_plan(layers)
    scratch = 8 * max(1, sum(sizes))
    rows = ''.join('| {} | {} | {} |\n'.format(
        c_layer.index, comment_text(c_layer.layer.name),
        c_layer.title().split(': ', 1)[1]) for c_layer in layers)
    builds = ''.join('{}:\n\n    {}\n\n'.format(target, command)
                     for target, command in BUILDS)
    return fill(README, TITLE=title(network), SIZE=network.input['size'],
                SHAPE='x'.join(str(v) for v in input_shape(network)),
                CLASSES=network.layers[-1].n_out, BUILDS=builds,
                MEMORY=memory_table(constant_bytes(layers), scratch),
                STACK=stack_bytes(layers), LAYERS=rows, FLAGS=EXACT_FLAGS)


def memory_table(constants, scratch):
    rows = (('what', 'bytes'), ('---', '---:'),
            ('constant data (`static const`, flash): weights, thresholds, '
             'the output layer\'s affine map', constants),
            ('scratch (`QNN_SCRATCH_BYTES`): on the stack of `qnn_predict`, '
             'or the buffer passed to `qnn_predict_scratch`', scratch))
    return ''.join('| {} | {} |\n'.format(*row) for row in rows)


README = '''# $TITLE, as C

`qnn_model.h` and `qnn_model.c` compute the packed network that export.py
wrote them from: C99 with `<stdint.h>` only (a compiler may turn the loops
that clear memory into calls of `memset`), no allocation, no I/O, no
global written at run time. The weights are `static const` words (flash
on a microcontroller).

## Call

```c
#include "qnn_model.h"

float logits[QNN_CLASSES];
int label = qnn_predict(pixels, logits);  /* pixels: QNN_INPUT_SIZE bytes */
```

`pixels` are the image's $SIZE bytes ($SHAPE, channel, row, column: the
order of the data set's IDX file), unscaled. `qnn_predict` writes the
$CLASSES logits and returns the class of the first largest one.
`qnn_predict_scratch(pixels, logits, scratch)` does the same with a
scratch buffer of `QNN_SCRATCH_WORDS` `uint64_t` words passed in (for a
small stack; one buffer per thread).

## Build

Any C99 compiler. Keep the float32 operations of the output layer as they
are written: no `-ffast-math` (nor `-Ofast`), and `$FLAGS`
(GCC's default with `-std=c99`, not with `-std=gnu99`; the source also
stores the product in a volatile float so that no compiler fuses it with
the addition after it). `-ffast-math` and x87 arithmetic (32-bit x86
without SSE) are refused at compile time.

$BUILDS## Memory

$MEMORY
The code adds a few kilobytes (`size qnn_model.o` gives the total). The
stack of a call is its scratch (for `qnn_predict`) and less than
$STACK bytes more.

## Layers

| # | name | computes |
|---|---|---|
$LAYERS
Every sum is an exact integer (popcounts of the weights' and activations'
bits); each hidden unit's output is the number of its thresholds its sum
reaches; the logits are ((s - mean) * inv_std) * gamma + beta in float32,
in that order, equal bit for bit to the packed network's
(`inference.py FILE.bnn --logits OUT.npy`).
'''


def generate(network):
    """``{file name: text}`` of the C source of ``network`` (a
    :class:`qnn.packed.format.PackedNetwork`); raises
    :class:`UnsupportedNetwork`."""
    layers = plan(network)
    return {'qnn_model.h': header_source(network, layers),
            'qnn_model.c': model_source(network, layers),
            'README.md': readme(network, layers)}


def summary(network, files):
    """Lines for export.py: the files and the memory the model needs."""
    layers = plan(network)
    return ('C99 source: {} ({} layers), {} bytes of constant data, '
            'scratch {} bytes'.format(
                ', '.join('{} {} bytes'.format(name, len(files[name]))
                          for name in FILES), len(layers),
                constant_bytes(layers), 8 * max(1, sum(scratch_plan(layers)))))

"""Model summary of a packed network, in the spirit of larq's.

One row per layer: kind, shape (a convolution's input and output
channels x height x width), weight and input (activation) bits,
parameters, the bytes they take in the file, and multiply-accumulates per
image: binary (1-bit by 1-bit, done as XNOR and popcount), 8-bit by 1-bit
(the first layer's pixels: a dense layer's as 8 AND-popcounts, one per bit
plane; a convolution's as integer sums), k-bit (weights or activations of
2 to 4 bits: exact integer sums, :mod:`qnn.packed.level_kernels`), and
float (none: the batch normalizations are folded into integer thresholds,
the last one into 2 float32 multiplies and 2 adds per logit). Each row
also counts its bit-plane MACs (not printed: the roofline of
``bench/roofline.py`` divides by them), the 1-bit by 1-bit products the
layer's arithmetic comes to when every operand is split into its bit
planes:

.. math::

    \\mathrm{bit\\ MACs} = k_w \\, k_x \\, \\mathrm{MACs}

with :math:`k_w` the weight bits and :math:`k_x` the input bits (8 for
pixels): the first layer of an MLP on 784 pixels with 1000 units is
:math:`8 \\cdot 784 \\cdot 1000`. Then the
totals, the size of the same parameters as float32, and the size of the
file, header and checksum included: the number of bytes on disk.
"""
from qnn.packed import format as packed_format

_FLOAT_BYTES = 4


def _valid_taps(size, out, ksize, pad):
    """The taps of one axis inside the image, summed over the ``out``
    output positions."""
    return sum(min(out, size + pad - dy) - max(0, pad - dy)
               for dy in range(ksize))


def _conv_macs(layer):
    """Multiply-accumulates of a convolution per image: one per valid
    tap, input channel and output channel at each position (before
    pooling), as the zero padding adds nothing."""
    channels, height, width = layer.conv['in_shape']
    out_height, out_width = layer.conv_shape
    rows = _valid_taps(height, out_height, layer.ksize, layer.pad)
    columns = _valid_taps(width, out_width, layer.ksize, layer.pad)
    return rows * columns * channels * layer.conv['channels']


def _kind(layer):
    if layer.conv is not None:
        return '{} conv {}x{}{}, {}'.format(
            'pixel' if layer.kind == 'conv_pixels' else 'XNOR'
            if layer.kind == 'conv_xnor' else '{}-bit{}'.format(
                layer.levels['weight_bits'], ' pixel' if
                layer.kind == 'conv_levels_pixels' else ''),
            layer.ksize, layer.ksize,
            ' + pool 2x2' if layer.conv['pool'] else '', layer.output)
    if layer.levels is not None:
        return '{}-bit dense{}, {}'.format(
            layer.levels['weight_bits'],
            ' on pixels' if layer.kind == 'levels_pixels' else '',
            layer.output)
    return '{} dense, {}'.format(
        'bit-plane' if layer.kind == 'planes' else 'XNOR', layer.output)


def _pixel_bits(input):
    """The bits of what the first layer reads: the pixels', or those of
    the levels 0..n of ``n`` pixel thresholds."""
    if 'pixel_thresholds' in input:
        return len(input['pixel_thresholds']).bit_length()
    return input['pixel_bits']


def _shape(layer):
    if layer.conv is not None:
        return '{}->{}'.format('x'.join(map(str, layer.conv['in_shape'])),
                               'x'.join(map(str, layer.out_shape)))
    return '{}x{}'.format(layer.n_in, layer.n_out)


def rows(network):
    """Per-layer dicts of the summary's columns."""
    out = []
    for layer in network.layers:
        weights = layer.weights.shape[0] * (
            layer.conv['in_shape'][0] * layer.taps if layer.conv
            else layer.n_in)
        macs = _conv_macs(layer) if layer.conv else weights
        units = layer.weights.shape[0]
        folded = sum(a.size for name, a in layer.arrays.items()
                     if name != 'weights')
        on_pixels = layer.kind in ('planes', 'conv_pixels', 'levels_pixels',
                                   'conv_levels_pixels')
        bits = layer.levels or {}
        weight_bits = bits.get('weight_bits', 1)
        input_bits = _pixel_bits(network.input) if on_pixels else \
            bits.get('input_bits', 1)
        kind = 'binary' if max(weight_bits, input_bits) == 1 else \
            'int8' if weight_bits == 1 else 'multibit'
        out.append({
            'name': layer.name, 'kind': _kind(layer), 'shape': _shape(layer),
            'weight_bits': weight_bits, 'input_bits': input_bits,
            'params': weights + folded,
            'packed_bytes': sum(a.nbytes for a in layer.arrays.values()),
            # the unfolded layer: W and gamma, beta, mean, var of its BN
            'float32_bytes': (weights + 4 * units) * _FLOAT_BYTES,
            'binary_macs': macs if kind == 'binary' else 0,
            'int8_macs': macs if kind == 'int8' else 0,
            'multibit_macs': macs if kind == 'multibit' else 0,
            'float_macs': 0,
            'bit_macs': weight_bits * input_bits * macs,
        })
    return out


def bit_macs(network):
    """Bit-plane multiply-accumulates of one image through ``network``,
    the sum of the rows' ``bit_macs``."""
    return sum(row['bit_macs'] for row in rows(network))


def summary(network):
    """The summary as text (lines without a final newline)."""
    table = rows(network)
    header = ('layer', 'kind', 'shape', 'w bits', 'in bits', 'params',
              'packed B', '1x1 MACs', '8x1 MACs', 'kxk MACs', 'float MACs')
    lines = [[r['name'], r['kind'], r['shape'], r['weight_bits'],
              r['input_bits'], r['params'], r['packed_bytes'],
              r['binary_macs'], r['int8_macs'], r['multibit_macs'],
              r['float_macs']] for r in table]
    total = {k: sum(r[k] for r in table) for k in (
        'params', 'packed_bytes', 'float32_bytes', 'binary_macs',
        'int8_macs', 'multibit_macs', 'float_macs')}
    lines.append(['total', '', '', '', '', total['params'],
                  total['packed_bytes'], total['binary_macs'],
                  total['int8_macs'], total['multibit_macs'],
                  total['float_macs']])
    cells = [list(header)] + [[str(c) for c in line] for line in lines]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    text = []
    for index, row in enumerate(cells):
        text.append('  '.join(
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if index in (0, len(cells) - 2):
            text.append('-' * len(text[0]))
    size = network.file_size
    text.append('float32 size: {} bytes (weights and batch normalization '
                'as float32)'.format(total['float32_bytes']))
    text.append('packed arrays: {} bytes'.format(total['packed_bytes']))
    if size is not None:
        text.append('file size: {} bytes ({:.1f}x smaller than '
                    'float32)'.format(size, total['float32_bytes'] / size))
    return '\n'.join(text)


def file_summary(path):
    """Summary of the file ``path`` (raises
    :class:`qnn.packed.format.PackedFileError`)."""
    return summary(packed_format.load(path))

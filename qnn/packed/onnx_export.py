"""The packed network as an ONNX graph, standard or in the QONNX dialect.

Built from the folded network (:class:`qnn.packed.format.PackedNetwork`,
what :func:`qnn.packed.model.fold` returns), so that the graph computes the
packed network's integer arithmetic (:mod:`qnn.packed.forward`) and gives its
logits to the bit:

* :func:`to_onnx`: standard ONNX (opset :data:`OPSET`). Input ``pixels``,
  ``uint8`` ``(N, size)`` (784 for MNIST), the raw pixel values 0..255 in
  the data set's channel, row, column order (the training's scaling is
  folded into the thresholds); output ``logits``, ``float32``
  ``(N, classes)``; with the input's ``pixel_thresholds``, the levels
  :math:`\\sum_m [p \\ge t_m]` (``GreaterOrEqual`` on the pixels as a
  column, ``ReduceSum``) in place of the pixels. Each dense layer is a
  ``MatMul`` by its :math:`\\pm 1` weights in float32 (stored as
  ``int8``, cast once), each convolution a ``Conv`` (the layer's kernel
  size and zero padding, 3x3 and 1 by default; the padding adds nothing,
  as the packed layer's valid taps) followed by ``MaxPool`` (2x2,
  ``ceil_mode``, as ``cover_all``; ``-MaxPool(-x)`` for the flipped
  channels); the first dense layer after the convolutions reads the
  feature map transposed to (row, column, channel). Every sum is an
  integer below :math:`2^{24}` (at most 255 * 784, or 255 * k^2 *
  channels), so float32 holds it exactly
  whatever the order of summation. A ``'sign'`` unit is
  ``GreaterOrEqual(sum, T)`` then ``Where`` to :math:`\\pm 1`, ``T`` the
  integer threshold as float32 (exact too); the output layer is
  ``((a - mean) * inv_std) * gamma + beta`` in float32, in the order of
  :func:`qnn.packed.forward.affine_logits`.
* :func:`to_qonnx`: the QONNX dialect that FINN reads. Input ``pixels``,
  ``float32`` ``(1, size)`` holding the pixel values 0..255, annotated
  ``UINT8`` (QONNX keeps every tensor in a float32 container, and FINN
  wants a fixed batch; with ``pixel_thresholds``, their levels as a
  ``MultiThreshold`` of one row of thresholds for every pixel); the
  weights :math:`\\pm 1` through ``BipolarQuant`` (scale 1:
  ``BIPOLAR``); each batch normalization and sign as a
  ``MultiThreshold`` node with one threshold per unit or channel
  (``data_layout`` NCHW after a convolution), ``out_scale`` 2 and
  ``out_bias`` -1 (the form FINN's streamlining gives a sign), its output
  annotated ``BIPOLAR``; the output layer's affine map as ``Sub``,
  ``Mul`` and ``Add`` nodes, as in :func:`to_onnx`.

Each layer is one function of the dialect's tables, chosen by the
layer's ``kind`` (its sums) and ``output`` (what follows them); a network
with a kind or output that a table lacks is refused with
:class:`UnsupportedLayer`. Needs the ``onnx`` package (``make onnx``),
imported on first use (:func:`import_onnx`), so that this module imports
without it; nothing in the training or the packed path imports this
module.
"""
import numpy

from qnn.packed import conv_kernels
from qnn.packed import level_kernels
from qnn.packed.bits import unpack_bits

OPSET = 17
# the IR version of opset 17 (onnx 1.12), which runtimes of that time read
IR_VERSION = 8
QONNX_DOMAIN = 'qonnx.custom_op.general'
INPUT = 'pixels'
OUTPUT = 'logits'
PRODUCER = 'qnn export.py'


class UnsupportedLayer(Exception):
    """A layer the export does not know; the message says which."""


def import_onnx():
    """The ``onnx`` package with its ``helper`` and ``numpy_helper``;
    raises ``ImportError`` without it."""
    import onnx
    import onnx.helper
    import onnx.numpy_helper
    return onnx


class _Graph(object):

    """The nodes, initializers and QONNX datatype annotations (tensor name
    -> ``'BIPOLAR'``, ...) of a graph being built."""

    def __init__(self):
        self.onnx = import_onnx()
        self.nodes = []
        self.initializers = []
        self.datatypes = {}
        # whether the last output is a feature map (N, K, H, W)
        self.maps = False

    def constant(self, name, array):
        self.initializers.append(self.onnx.numpy_helper.from_array(
            numpy.array(array, order='C'), name))  # 0-d stays 0-d
        return name

    def node(self, op, inputs, output, domain='', datatype=None,
             **attributes):
        """Adds ``op`` (named after its one output) and returns the
        output's name."""
        self.nodes.append(self.onnx.helper.make_node(
            op, inputs, [output], name=output, domain=domain, **attributes))
        if datatype is not None:
            self.datatypes[output] = datatype
        return output


def signs(layer):
    """The layer's weights as :math:`\\pm 1` ``int8``: ``(n_in, n_out)``
    (bit 1 is +1), the layout of ``MatMul(x, W)``, for a dense layer;
    ``(K, C, k, k)``, the layout of ``Conv``, for a convolution."""
    if layer.conv is not None:
        return conv_kernels.weight_taps(layer).astype(numpy.int8)
    bits = unpack_bits(layer.weights, layer.n_in)
    return numpy.where(bits, 1, -1).astype(numpy.int8).T


def _thresholds(layer):
    """The thresholds as float32 (exact integers), shaped to broadcast
    over a convolution's ``(N, K, H, W)`` sums."""
    t = layer.thresholds.astype(numpy.float32)
    return t.reshape(1, -1, 1, 1) if layer.conv is not None else t


def _flattened(graph, layer, x):
    """``x``, or the feature map before it as one row per image in the
    (row, column, channel) order of the packed layer's weights."""
    if not graph.maps:
        return x
    graph.maps = False
    x = graph.node('Transpose', [x], layer.name + '/maps_hwc',
                   perm=[0, 2, 3, 1])
    shape = graph.constant(layer.name + '/flat_shape',
                           numpy.array([-1, layer.n_in], numpy.int64))
    return graph.node('Reshape', [x, shape], layer.name + '/flat')


def _conv(graph, layer, x, weights):
    """The k x k convolution (zero padding: a tap outside adds nothing),
    then the 2x2 pooling of the packed layer: the maximum, the minimum
    (``-MaxPool(-x)``) for the flipped channels."""
    graph.maps = True
    if layer.kind == 'conv_pixels':
        pixels = graph.node('Cast', [x], layer.name + '/pixels',
                            to=graph.onnx.TensorProto.FLOAT)
        shape = graph.constant(layer.name + '/image_shape', numpy.array(
            [-1] + list(layer.conv['in_shape']), numpy.int64))
        x = graph.node('Reshape', [pixels, shape], layer.name + '/images')
    sums = graph.node('Conv', [x, weights], layer.name + '/sums',
                      kernel_shape=[layer.ksize] * 2, pads=[layer.pad] * 4)
    if not layer.conv['pool']:
        return sums
    pool = dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    high = graph.node('MaxPool', [sums], layer.name + '/max', **pool)
    if not layer.flipped.any():
        return high
    negated = graph.node('Neg', [sums], layer.name + '/negated')
    low = graph.node('Neg', [graph.node(
        'MaxPool', [negated], layer.name + '/max_negated', **pool)],
        layer.name + '/min')
    flipped = graph.constant(layer.name + '/flipped', layer.flipped.astype(
        bool).reshape(1, -1, 1, 1))
    return graph.node('Where', [flipped, low, high], layer.name + '/pooled')


# --- standard ONNX ----------------------------------------------------------

def _onnx_weights(graph, layer):
    w = graph.constant(layer.name + '/weights', signs(layer))
    return graph.node('Cast', [w], layer.name + '/weights_float',
                      to=graph.onnx.TensorProto.FLOAT)


def _dense(weights):
    """A dense layer's sums, its weights from ``weights(graph, layer)``
    (the dialect's)."""
    def layer_sums(graph, layer, x):
        return graph.node('MatMul', [_flattened(graph, layer, x),
                                     weights(graph, layer)],
                          layer.name + '/sums')
    return layer_sums


def _convolution(weights):
    """A convolution's pooled sums (:func:`_conv`), its weights from
    ``weights(graph, layer)``."""
    def layer_sums(graph, layer, x):
        return _conv(graph, layer, x, weights(graph, layer))
    return layer_sums


def _onnx_planes(graph, layer, pixels):
    # the pixel values as float32, exact (0..255)
    x = graph.node('Cast', [pixels], layer.name + '/pixels',
                   to=graph.onnx.TensorProto.FLOAT)
    return _dense(_onnx_weights)(graph, layer, x)


def _onnx_sign(graph, layer, sums):
    t = graph.constant(layer.name + '/thresholds', _thresholds(layer))
    bits = graph.node('GreaterOrEqual', [sums, t], layer.name + '/bits')
    one = graph.constant(layer.name + '/one', numpy.float32(1))
    minus_one = graph.constant(layer.name + '/minus_one', numpy.float32(-1))
    return graph.node('Where', [bits, one, minus_one],
                      layer.name + '/signs')


def _affine(graph, layer, sums):
    """``((a - mean) * inv_std) * gamma + beta`` (both dialects)."""
    # Sub, not Add of -mean: onnxruntime fuses a MatMul and the Add after
    # it into one Gemm, which adds the bias inside the sum's rounding
    x = sums
    for op, name in (('Sub', 'mean'), ('Mul', 'inv_std'), ('Mul', 'gamma'),
                     ('Add', 'beta')):
        c = graph.constant('{}/{}'.format(layer.name, name),
                           numpy.asarray(getattr(layer, name),
                                         numpy.float32))
        x = graph.node(op, [x, c], '{}/{}_{}'.format(
            layer.name, op.lower(), name))
    return x


def _level_values(layer):
    """The k-bit layer's weights as the integers :math:`2v - L_w`,
    ``(n_in, n_out)``."""
    return level_kernels.signed_weights(layer).T


def _onnx_levels(graph, layer, x):
    # the input: pixels, or the signed levels 2u - L_a of the layer before
    if layer.kind == 'levels_pixels':
        x = graph.node('Cast', [x], layer.name + '/pixels',
                       to=graph.onnx.TensorProto.FLOAT)
    w = graph.constant(layer.name + '/weights',
                       _level_values(layer).astype(numpy.int8))
    w = graph.node('Cast', [w], layer.name + '/weights_float',
                   to=graph.onnx.TensorProto.FLOAT)
    return graph.node('MatMul', [x, w], layer.name + '/sums')


def _onnx_levels_output(graph, layer, sums):
    """The level u each unit reaches (the thresholds its sum reaches,
    counted), as the next layer's input 2u - L."""
    axes = graph.constant(layer.name + '/last_axis',
                          numpy.array([-1], numpy.int64))
    x = graph.node('Unsqueeze', [sums, axes], layer.name + '/sums_column')
    t = graph.constant(layer.name + '/thresholds',
                       layer.thresholds.astype(numpy.float32))
    x = graph.node('GreaterOrEqual', [x, t], layer.name + '/reached')
    x = graph.node('Cast', [x], layer.name + '/reached_float',
                   to=graph.onnx.TensorProto.FLOAT)
    x = graph.node('ReduceSum', [x, axes], layer.name + '/levels',
                   keepdims=0)
    two = graph.constant(layer.name + '/two', numpy.float32(2))
    top = graph.constant(layer.name + '/top', numpy.float32(
        layer.thresholds.shape[1]))
    x = graph.node('Mul', [x, two], layer.name + '/levels_twice')
    return graph.node('Sub', [x, top], layer.name + '/signed_levels')


ONNX_KINDS = {'planes': _onnx_planes, 'xnor': _dense(_onnx_weights),
              'conv_pixels': _convolution(_onnx_weights),
              'conv_xnor': _convolution(_onnx_weights),
              'levels_pixels': _onnx_levels, 'levels': _onnx_levels}
ONNX_OUTPUTS = {'sign': _onnx_sign, 'affine': _affine,
                'levels': _onnx_levels_output}


# --- QONNX ------------------------------------------------------------------

def _qonnx_weights(graph, layer):
    w = graph.constant(layer.name + '/weights',
                       signs(layer).astype(numpy.float32))
    scale = graph.constant(layer.name + '/weight_scale', numpy.float32(1))
    return graph.node('BipolarQuant', [w, scale],
                      layer.name + '/weights_bipolar', domain=QONNX_DOMAIN,
                      datatype='BIPOLAR')


def _multithreshold(graph, layer, sums):
    # MultiThreshold counts the thresholds its input reaches (>=): one per
    # unit gives 0 or 1, times 2 minus 1 gives the sign
    t = graph.constant(layer.name + '/thresholds', layer.thresholds.astype(
        numpy.float32).reshape(-1, 1))
    return graph.node('MultiThreshold', [sums, t], layer.name + '/signs',
                      domain=QONNX_DOMAIN, datatype='BIPOLAR',
                      out_dtype='BIPOLAR', out_scale=2.0, out_bias=-1.0,
                      data_layout='NCHW' if layer.conv else 'NC')


def _qonnx_levels(graph, layer, x):
    # the weights 2v - L_w through Quant: signed integers of k + 1 bits,
    # which it leaves as they are
    bits = layer.levels['weight_bits'] + 1
    w = graph.constant(layer.name + '/weights',
                       _level_values(layer).astype(numpy.float32))
    scale = graph.constant(layer.name + '/weight_scale', numpy.float32(1))
    zero = graph.constant(layer.name + '/weight_zero', numpy.float32(0))
    width = graph.constant(layer.name + '/weight_bits', numpy.float32(bits))
    w = graph.node('Quant', [w, scale, zero, width],
                   layer.name + '/weights_int', domain=QONNX_DOMAIN,
                   datatype='INT{}'.format(bits), signed=1, narrow=0,
                   rounding_mode='ROUND')
    return graph.node('MatMul', [x, w], layer.name + '/sums')


def _multithreshold_levels(graph, layer, sums):
    # the count of thresholds reached is the level u; out_scale 2 and
    # out_bias -L give the next layer's input 2u - L
    top = layer.thresholds.shape[1]
    datatype = 'BIPOLAR' if top == 1 else 'INT{}'.format(
        layer.levels['output_bits'] + 1)
    t = graph.constant(layer.name + '/thresholds',
                       layer.thresholds.astype(numpy.float32))
    return graph.node('MultiThreshold', [sums, t], layer.name + '/levels',
                      domain=QONNX_DOMAIN, datatype=datatype,
                      out_dtype=datatype, out_scale=2.0,
                      out_bias=float(-top), data_layout='NC')


def _qonnx_input_levels(graph, thresholds):
    """The pixels' levels as a ``MultiThreshold`` of the thresholds shared
    by every pixel (shape (1, n)), annotated ``UINT`` of the bits of n."""
    t = graph.constant('input/pixel_thresholds', numpy.array(
        [thresholds], numpy.float32))
    datatype = 'UINT{}'.format(len(thresholds).bit_length())
    return graph.node('MultiThreshold', [INPUT, t], 'input/levels',
                      domain=QONNX_DOMAIN, datatype=datatype,
                      out_dtype=datatype, out_scale=1.0, out_bias=0.0,
                      data_layout='NC')


QONNX_KINDS = {'planes': _dense(_qonnx_weights),
               'xnor': _dense(_qonnx_weights),
               'conv_pixels': _convolution(_qonnx_weights),
               'conv_xnor': _convolution(_qonnx_weights),
               'levels_pixels': _qonnx_levels, 'levels': _qonnx_levels}
QONNX_OUTPUTS = {'sign': _multithreshold, 'affine': _affine,
                 'levels': _multithreshold_levels}


# --- the model --------------------------------------------------------------

def check_supported(network, kinds, outputs, dialect):
    """Raises :class:`UnsupportedLayer` for the first layer whose kind or
    output the tables ``kinds`` and ``outputs`` lack."""
    for index, layer in enumerate(network.layers):
        for what, value, table in (('kind', layer.kind, kinds),
                                   ('output', layer.output, outputs)):
            if value not in table:
                raise UnsupportedLayer(
                    'layer {} ({}) is of {} {!r}, which the {} export does '
                    'not know (it knows {})'.format(
                        index + 1, layer.name, what, value, dialect,
                        ', '.join(sorted(table))))
    if not network.layers or network.layers[-1].output != 'affine':
        raise UnsupportedLayer('the network does not end in an affine '
                               'output layer')


def _model(network, graph, x, dialect, input_type, batch):
    onnx = graph.onnx
    helper = onnx.helper
    source = network.source.get('snapshot')
    doc = ('{} of the packed network{}: input {!r}, {} ({}, {}), the raw '
           'pixel values 0..255; output {!r}, float32 ({}, {}), the '
           'logits'.format(dialect, ' of ' + source if source else '',
                           INPUT, input_type, batch, network.input['size'],
                           OUTPUT, batch, network.layers[-1].n_out))
    inputs = [helper.make_tensor_value_info(
        INPUT, helper.np_dtype_to_tensor_dtype(numpy.dtype(input_type)),
        [batch, network.input['size']])]
    outputs = [helper.make_tensor_value_info(
        OUTPUT, onnx.TensorProto.FLOAT, [batch, network.layers[-1].n_out])]
    # the last node's output is the graph's
    last, = [node for node in graph.nodes if node.output[0] == x]
    last.output[0] = last.name = OUTPUT
    proto = helper.make_graph(graph.nodes, 'packed_network', inputs,
                              outputs, graph.initializers)
    for name, datatype in sorted(graph.datatypes.items()):
        proto.quantization_annotation.append(onnx.TensorAnnotation(
            tensor_name=name, quant_parameter_tensor_names=[
                onnx.StringStringEntryProto(key='finn_datatype',
                                            value=datatype)]))
    opsets = [helper.make_opsetid('', OPSET)]
    if any(node.domain == QONNX_DOMAIN for node in graph.nodes):
        opsets.append(helper.make_opsetid(QONNX_DOMAIN, 1))
    model = helper.make_model(proto, opset_imports=opsets,
                              producer_name=PRODUCER, doc_string=doc)
    model.ir_version = IR_VERSION
    return model


def _input_levels(graph, thresholds):
    """The pixels' levels :math:`\\sum_m [p \\ge t_m]` in float32 (the
    input's ``pixel_thresholds``: :func:`qnn.packed.format.input_values`)."""
    x = graph.node('Cast', [INPUT], 'input/pixels',
                   to=graph.onnx.TensorProto.FLOAT)
    axes = graph.constant('input/last_axis', numpy.array([-1], numpy.int64))
    x = graph.node('Unsqueeze', [x, axes], 'input/pixels_column')
    t = graph.constant('input/pixel_thresholds',
                       numpy.array(thresholds, numpy.float32))
    x = graph.node('GreaterOrEqual', [x, t], 'input/reached')
    x = graph.node('Cast', [x], 'input/reached_float',
                   to=graph.onnx.TensorProto.FLOAT)
    return graph.node('ReduceSum', [x, axes], 'input/levels', keepdims=0)


def _build(network, kinds, outputs, dialect):
    check_supported(network, kinds, outputs, dialect)
    graph = _Graph()
    x = INPUT
    if 'pixel_thresholds' in network.input:
        levels = _input_levels if dialect == 'ONNX' else \
            _qonnx_input_levels
        x = levels(graph, network.input['pixel_thresholds'])
    for layer in network.layers:
        x = outputs[layer.output](graph, layer, kinds[layer.kind](
            graph, layer, x))
    return graph, x


def to_onnx(network):
    """The standard ONNX model (``onnx.ModelProto``) of ``network``: uint8
    ``pixels`` ``(N, 784)`` in, float32 ``logits`` out."""
    graph, x = _build(network, ONNX_KINDS, ONNX_OUTPUTS, 'ONNX')
    return _model(network, graph, x, 'ONNX', 'uint8', 'N')


def to_qonnx(network):
    """The QONNX model of ``network``: ``pixels`` ``(1, 784)`` in (float32,
    annotated ``UINT8``), float32 ``logits`` out."""
    graph, x = _build(network, QONNX_KINDS, QONNX_OUTPUTS, 'QONNX')
    graph.datatypes[INPUT] = 'UINT8'
    return _model(network, graph, x, 'QONNX', 'float32', 1)


DIALECTS = {'onnx': to_onnx, 'qonnx': to_qonnx}


def describe(model):
    """One line: opset, input and output, node count."""
    helper = import_onnx().helper

    def tensor(info):
        t = info.type.tensor_type
        return '{} {} ({})'.format(
            info.name, helper.tensor_dtype_to_np_dtype(t.elem_type),
            ', '.join(d.dim_param or str(d.dim_value)
                      for d in t.shape.dim))
    opset = [o.version for o in model.opset_import if not o.domain]
    return 'opset {}: input {}, output {}; {} nodes'.format(
        opset[0], tensor(model.graph.input[0]),
        tensor(model.graph.output[0]), len(model.graph.node))

#!/usr/bin/env python
"""The float peer of the packed networks: a trained network as the plainest
float32 ONNX graph, run by onnxruntime.

Built from a training snapshot and its config.json (``export.read_options``
and ``export.read_parameters``, the layers of ``net.ARCHITECTURES``) with
``onnx.helper``, without the folding of :mod:`qnn.packed`:

* input ``pixels``, float32 ``(N, size)`` in [0, 1] (the data set's
  pixels / 255, channel, row, column order); a network trained on [-1, 1]
  (``--input-range symmetric``) gets ``2 x - 1`` as its first nodes;
* a dense layer is ``MatMul`` by its quantized weights (``sign(W)``, or
  :func:`qst.quantize`'s levels for k-bit weights) as float32; a
  convolution is ``Conv`` (3x3, pad 1, no bias) by the same, followed at
  the end of a stage by ``MaxPool`` 2x2 stride 2 (``ceil_mode`` where the
  size is odd: Chainer's ``cover_all``);
* each batch normalization is one multiply-add per channel, by
  :math:`s = \\gamma / \\sqrt{\\sigma^2 + \\epsilon}` and :math:`\\beta -
  \\mu s` (the shift-based BN of ``--bn shift`` as the standard BN of the
  same map, ``folding.shift_bn_as_standard``), as ONNX's
  ``BatchNormalization`` of mean 0, variance 1 and epsilon 0, which runs
  it in one pass;
* a hidden activation is the sign as a compare, ``Where(x >= 0, 1, -1)``
  (sign(0) = +1), or for k-bit activations the linear quantizer's levels
  (clip to [-1, 1], ``floor((x + 1) n / 2 + 1/2)`` with :math:`n = 2^k -
  1`, then ``2 i / n - 1``: :func:`qst.quantize`'s round half up); 32 bits
  is the clip alone;
* output ``logits``, float32 ``(N, classes)``.

The log quantizer's k-bit activations have no graph here (refused with one
line). onnxruntime runs the graph with every graph optimization on and
``--threads`` intra-op threads. The graph is float arithmetic: its logits
differ from the Chainer model's by rounding, so a handful of the 10,000
test predictions can differ.

    .venv/bin/python bench/peers/onnxruntime_float.py result/snapshot_iter_12000
    .venv/bin/python bench/peers/onnxruntime_float.py SNAPSHOT --batch 1 --threads 1

It prints the accuracy on the test set, images/s at ``--batch`` (median of
``--rounds``) and how many predictions differ from the Chainer model's.
``bench/packed_networks.py`` runs it beside the packed network.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

import numpy  # NOQA: E402

import export  # NOQA: E402
import net  # NOQA: E402
from qnn import datasets  # NOQA: E402
from qnn.functions.batch_normalization_sign import DEFAULT_EPS  # NOQA: E402
from qnn.packed import folding  # NOQA: E402
# the opset, IR version and tensor names of our own export's graph
from qnn.packed.onnx_export import INPUT, IR_VERSION, OPSET, OUTPUT  # NOQA
import qst  # NOQA: E402


class GraphError(Exception):
    """The snapshot has no float graph here; the message says why."""


class Graph(object):

    """Nodes and initializers of a graph being built; each method adds
    nodes and returns the name of their output."""

    def __init__(self):
        import onnx
        import onnx.helper
        import onnx.numpy_helper
        self.float32 = onnx.TensorProto.FLOAT
        self.helper = onnx.helper
        self.numpy_helper = onnx.numpy_helper
        self.nodes = []
        self.initializers = []

    def constant(self, array, dtype=numpy.float32):
        name = 'c{}'.format(len(self.initializers))
        self.initializers.append(self.numpy_helper.from_array(
            numpy.ascontiguousarray(array, dtype), name))
        return name

    def node(self, op, *inputs, **attributes):
        output = 't{}'.format(len(self.nodes))
        self.nodes.append(self.helper.make_node(
            op, list(inputs), [output], **attributes))
        return output

    def affine(self, x, scale, shift):
        """``x * scale + shift``: by scalars, a ``Mul`` and an ``Add``; per
        channel (axis 1), one ``BatchNormalization`` of mean 0, variance
        1 and epsilon 0, the same multiply-add in one pass (with it
        onnxruntime 1.31 ran the small ConvNet's graph faster than with a
        ``Mul`` and an ``Add``, in each of four alternating runs)."""
        if numpy.ndim(scale) == 0:
            return self.node('Add', self.node('Mul', x, self.constant(
                scale)), self.constant(shift))
        n = len(scale)
        return self.node('BatchNormalization', x, self.constant(scale),
                         self.constant(shift), self.constant(numpy.zeros(n)),
                         self.constant(numpy.ones(n)), epsilon=0.0)

    def activation(self, x, bits):
        """The hidden activation of ``bits`` bits (linear quantizer)."""
        if bits == 1:
            positive = self.node('GreaterOrEqual', x, self.constant(0.0))
            return self.node('Where', positive, self.constant(1.0),
                             self.constant(-1.0))
        x = self.node('Clip', x, self.constant(-1.0), self.constant(1.0))
        if bits == qst.FULL_PRECISION:
            return x
        n = 2 ** bits - 1
        # the order of qst.quantize: (x + 1) * n / 2, + 1/2, floor
        x = self.node('Mul', self.node('Add', x, self.constant(1.0)),
                      self.constant(n / 2.))
        levels = self.node('Floor', self.node('Add', x, self.constant(0.5)))
        return self.affine(levels, 2. / n, -1.0)

    def model(self, in_size, n_out):
        helper = self.helper
        self.nodes[-1].output[0] = OUTPUT
        graph = helper.make_graph(
            self.nodes, 'float_peer',
            [helper.make_tensor_value_info(INPUT, self.float32,
                                           ['N', in_size])],
            [helper.make_tensor_value_info(OUTPUT, self.float32,
                                           ['N', n_out])],
            self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid('', OPSET)],
            producer_name='bench/peers/onnxruntime_float.py')
        model.ir_version = IR_VERSION
        return model


def _array(params, key, shape):
    if key not in params:
        raise GraphError('has no {}: not a snapshot of the network its '
                         'config.json describes'.format(key))
    if params[key].shape != tuple(shape):
        raise GraphError('{} has shape {}, but the network its config.json '
                         'describes has {}'.format(key, params[key].shape,
                                                   tuple(shape)))
    return params[key]


def bn_scale_shift(params, name, size, eps, shift_based=False):
    """``(scale, shift)`` of the evaluation-mode batch normalization
    ``name`` (``b1``, ``bn1_1``, ``bn_fc1``) as one multiply-add."""
    bn = [_array(params, '{}/{}'.format(name, key), (size,))
          for key in ('gamma', 'beta', 'avg_mean', 'avg_var')]
    if shift_based:
        bn = folding.shift_bn_as_standard(*bn, eps=eps)
    gamma, beta, mean, var = (numpy.asarray(v, numpy.float64) for v in bn)
    scale = gamma / numpy.sqrt(var + eps)
    return scale, beta - mean * scale


def quantized_weights(params, key, shape, options):
    """The weights the network multiplies by: :func:`qst.quantize` of
    ``W`` (``sign(W)`` for 1 bit), float32."""
    W = _array(params, key, shape).astype(numpy.float32)
    return qst.quantize(W, options.weight_bits, options.quantizer)


def mlp_graph(graph, x, params, options, info):
    sizes = [info.in_size] + [options.unit] * options.layers + [
        info.n_classes]
    for i in range(1, len(sizes)):
        W = quantized_weights(params, 'l{}/W'.format(i),
                              (sizes[i], sizes[i - 1]), options)
        x = graph.node('MatMul', x, graph.constant(W.T))
        hidden = i < len(sizes) - 1
        x = graph.affine(x, *bn_scale_shift(
            params, 'b{}'.format(i), sizes[i], options.bn_eps,
            hidden and options.bn == 'shift'))
        if hidden:
            x = graph.activation(x, options.activation_bits)
    return x


def convnet_graph(graph, x, params, options, info):
    arch = net.ARCHITECTURES[options.cnn_size]
    channels, height, width = info.shape
    x = graph.node('Reshape', x, graph.constant(
        [-1, channels, height, width], numpy.int64))
    for i, stage in enumerate(arch['conv'], 1):
        for j, out in enumerate(stage, 1):
            W = quantized_weights(params, 'conv{}_{}/W'.format(i, j),
                                  (out, channels, 3, 3), options)
            x = graph.node('Conv', x, graph.constant(W), kernel_shape=[3, 3],
                           pads=[1, 1, 1, 1])
            channels = out
            if j == len(stage):
                x = graph.node('MaxPool', x, kernel_shape=[2, 2],
                               strides=[2, 2],
                               ceil_mode=int(height % 2 or width % 2))
                height, width = (height + 1) // 2, (width + 1) // 2
            x = graph.affine(x, *bn_scale_shift(
                params, 'bn{}_{}'.format(i, j), out, DEFAULT_EPS))
            x = graph.activation(x, options.activation_bits)
    x = graph.node('Flatten', x, axis=1)
    size = channels * height * width
    units = tuple(arch['fc']) + (info.n_classes,)
    for i, n in enumerate(units, 1):
        W = quantized_weights(params, 'fc{}/W'.format(i), (n, size), options)
        x = graph.affine(graph.node('MatMul', x, graph.constant(W.T)),
                         *bn_scale_shift(params, 'bn_fc{}'.format(i), n,
                                         DEFAULT_EPS))
        if i < len(units):
            x = graph.activation(x, options.activation_bits)
        size = n
    return x


def build(params, options):
    """The float32 ONNX model of the predictor whose arrays are ``params``
    (``'l1/W'``, ``'b1/gamma'`` ...), trained with ``options`` (as
    ``export.read_options`` returns them); raises :class:`GraphError`."""
    if options.activation_bits > 1 and options.quantizer != 'linear':
        raise GraphError('its {}-bit activations use the {} quantizer; the '
                         'float graph has the linear quantizer\'s levels '
                         'only'.format(options.activation_bits,
                                       options.quantizer))
    info = datasets.get_info(options.dataset)
    graph = Graph()
    x = INPUT
    pixels = datasets.INPUT_RANGES[options.input_range]
    if (pixels['scale'], pixels['shift']) != (1., 0.):
        x = graph.affine(x, pixels['scale'], pixels['shift'])
    if options.arch == 'cnn':
        convnet_graph(graph, x, params, options, info)
    else:
        mlp_graph(graph, x, params, options, info)
    return graph.model(info.in_size, info.n_classes)


def load(snapshot):
    """``(model, options)`` of ``snapshot`` (with its config.json beside
    it); raises ``export.ExportError`` or :class:`GraphError`."""
    options, _ = export.read_options(snapshot)
    return build(export.read_parameters(snapshot, options), options), options


def session(model, threads):
    """An onnxruntime session of ``model``: every graph optimization,
    ``threads`` intra-op threads, one inter-op thread, the CPU."""
    import onnxruntime
    settings = onnxruntime.SessionOptions()
    settings.graph_optimization_level = \
        onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    settings.intra_op_num_threads = threads
    settings.inter_op_num_threads = 1
    settings.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    return onnxruntime.InferenceSession(model.SerializeToString(), settings,
                                        providers=['CPUExecutionProvider'])


def run(session, x, batchsize):
    """The logits of ``x`` (float32 pixels in [0, 1]) in batches."""
    return numpy.concatenate([
        session.run(None, {INPUT: x[lo:lo + batchsize]})[0]
        for lo in range(0, len(x), batchsize)])


def unit_pixels(images):
    """uint8 pixels as the graph's input: float32 pixels / 255 (what
    ``qnn.datasets`` gives a network trained on [0, 1])."""
    x = images.astype(numpy.float32)
    x *= 1 / 255.
    return x


def chainer_predictions(snapshot, options, images, batchsize):
    """The Chainer model's predicted classes (evaluation mode)."""
    import chainer
    sys.path.insert(0, os.path.dirname(HERE))
    import reference
    predictor = reference.chainer_predictor(snapshot, options)
    pixels = datasets.INPUT_RANGES[options.input_range]
    x = images.astype(numpy.float32) * numpy.float32(pixels['scale'] / 255.)
    x += numpy.float32(pixels['shift'])
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        return numpy.concatenate([
            predictor(x[lo:lo + batchsize]).array.argmax(axis=1)
            for lo in range(0, len(x), batchsize)])


def measure(args):
    model, options = load(args.snapshot)
    if args.output:
        with open(args.output, 'xb') as f:  # never over an existing file
            f.write(model.SerializeToString())
    images, labels = datasets.load_raw(options.dataset,
                                       args.data_dir)['test']
    x = unit_pixels(images)
    peer = session(model, args.threads)
    logits = run(peer, x, args.batch)  # warm-up
    seconds = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        run(peer, x, args.batch)
        seconds.append(time.perf_counter() - start)
    predicted = logits.argmax(axis=1)
    print('# onnxruntime {}, float32 graph of {} ({} nodes), {} thread(s)'
          .format(__import__('onnxruntime').__version__, args.snapshot,
                  len(model.graph.node), args.threads))
    print('accuracy {:.4f} on {} test images; {:.0f} images/s at batch {} '
          '(median of {})'.format((predicted == labels).mean(), len(images),
                                  len(images) / statistics.median(seconds),
                                  args.batch, args.rounds))
    if args.check:
        chainer = chainer_predictions(args.snapshot, options, images, 1000)
        print('predictions differing from the Chainer model: {} of '
              '{}'.format(int((chainer != predicted).sum()), len(images)))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('snapshot', metavar='SNAPSHOT')
    parser.add_argument('--data-dir', default=None)
    parser.add_argument('--batch', type=int, default=1000)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--threads', type=int, default=os.cpu_count() or 1,
                        help='onnxruntime intra-op threads')
    parser.add_argument('--no-check', dest='check', action='store_false',
                        help='skip the comparison with the Chainer model')
    parser.add_argument('-o', '--output', metavar='FILE',
                        help='also write the graph there (a new file)')
    args = parser.parse_args(argv)
    if min(args.batch, args.rounds, args.threads) < 1:
        parser.error('--batch, --rounds and --threads must be positive')
    from qnn.training.extensions import snapshots
    try:
        measure(args)
    except (export.ExportError, GraphError, datasets.DatasetError,
            snapshots.SnapshotError) as e:
        sys.exit('onnxruntime_float.py: error: {}: {}'.format(
            args.snapshot, e))
    except FileExistsError:
        sys.exit('onnxruntime_float.py: error: {} exists; name a new '
                 'file'.format(args.output))
    return 0


if __name__ == '__main__':
    sys.exit(main())

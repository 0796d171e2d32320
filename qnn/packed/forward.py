"""A whole packed network run on 8-bit pixels: the logits of
:func:`forward`, on one of three backends that compute the same integers.

* ``'numpy'``: the reference of each layer kind
  (:mod:`qnn.packed.dense_kernels`, :mod:`qnn.packed.conv_kernels`,
  :mod:`qnn.packed.level_kernels`);
* ``'numba'``: their numba kernels on all cores (``numba.set_num_threads``
  chooses how many), a batch of fewer images than that on the calling
  thread; a binarized MLP runs from pixels to logits in one call, the
  ``'network'`` kernel (:func:`mlp_plan`), and a ConvNet's dense layers
  after its convolutions in one, ``'tail'`` (:func:`tail_plan`);
* ``'cupy'``: their CUDA kernels on the current device (binarized
  networks only).

The last layer's integer sums become logits through its batch
normalization's affine map in float32 (:func:`affine_logits`).
"""
import numpy

from qnn.packed import conv_kernels
from qnn.packed import convnet_kernels
from qnn.packed import dense_kernels
from qnn.packed import level_kernels
from qnn.packed.bits import PIXEL_BITS
from qnn.packed.bits import n_words
from qnn.packed.bits import pack_bits
from qnn.packed.bits import unpack_bits
from qnn.packed.format import CONV_KINDS
from qnn.packed.format import LEVEL_KINDS
from qnn.packed.format import input_values


def _run_levels(layers, x, sums_of, output_levels, conv_levels):
    """A network of k-bit layers: the last layer's integer sums."""
    for layer in layers:
        if layer.kind in CONV_KINDS:
            x = conv_levels(layer, x)
            continue
        # maps flattened in (row, column, channel) order
        x = numpy.ascontiguousarray(x).reshape(len(x), -1)
        sums = numpy.asarray(sums_of(layer, x)).astype(numpy.int64)
        if layer.output != 'levels':
            return sums
        x = output_levels(sums, layer.thresholds)
    raise ValueError('the network has no output layer')


def _dense_input(layers, index, x):
    """``x`` as the packed input of the dense layer ``layers[index]``:
    flattened if the layer before it is a convolution."""
    if index and layers[index - 1].kind in CONV_KINDS:
        return conv_kernels.flatten(x, layers[index - 1].conv['channels'])
    return x


def _run_numpy(layers, x):
    if layers[0].kind in LEVEL_KINDS:
        return _run_levels(layers, x, level_kernels.reference_sums,
                           level_kernels.output_levels,
                           level_kernels.reference_conv_levels)
    for index, layer in enumerate(layers):
        if layer.kind in CONV_KINDS:
            x = conv_kernels.reference_layer(layer, x)
            continue
        x = _dense_input(layers, index, x)
        sums = dense_kernels.REFERENCE_SUMS[layer.kind](
            x, layer.weights, layer.n_in)
        if layer.output == 'sign':
            x = pack_bits(sums >= layer.thresholds)
        else:
            return sums
    raise ValueError('the network has no output layer')


def _run_numba(layers, pixels):
    # writable too: numba compiles a separate (slow to build) version of
    # each kernel for read-only arrays such as numpy.frombuffer's
    x = numpy.require(pixels, numpy.uint8, ['C', 'W'])
    if layers[0].kind in LEVEL_KINDS:
        return _run_levels(
            layers, x, level_kernels.popcount_sums,
            level_kernels.count_levels,
            level_kernels.numba_conv_levels)
    plan = mlp_plan(layers)
    if plan is not None:
        return _run_mlp(plan, x)[0]
    return _run_convnet(layers, x)[0]


def _run_convnet(layers, x):
    """The sums and logits (``None`` where the network has no
    :func:`tail_plan`) of a network whose first layers are convolutions,
    or any other network layer by layer."""
    whole = convnet_plan(layers)
    if whole is not None:
        # one call (the least Python a call: a batch of one image)
        kernel, args = whole
        return _call_for_logits(kernel, x.reshape(
            (len(x),) + tuple(layers[0].conv['in_shape'])), args)
    convs = _conv_count(layers)
    plan = tail_plan(layers[convs:]) if 0 < convs < len(layers) else None
    if plan is None:
        # layer by layer: a network of two layers (no hidden XNOR layer)
        return _run_numba_layers(layers, x), None
    for layer in layers[:convs]:
        x = conv_kernels.numba_layer(layer, x)
    x = numpy.require(_dense_input(layers, convs, x), requirements=[
        'C', 'W'])
    kernel, args = plan
    return _call_for_logits(kernel, x, args)


def _call_for_logits(kernel, x, args):
    """The sums and logits of ``kernel(x, *args, sums, logits)``, the
    last of ``args`` the output layer's affine map."""
    n = len(args[-1][0])
    sums = numpy.empty((len(x), n), numpy.int64)
    logits = numpy.empty((len(x), n), numpy.float32)
    kernel(x, *args, sums, logits)
    return sums, logits


def _conv_count(layers):
    """The number of convolutions at the start of ``layers``."""
    convs = 0
    while convs < len(layers) and layers[convs].kind in CONV_KINDS:
        convs += 1
    return convs


def _dense_arguments(hidden, last):
    """The arguments of the network kernels after the first layer's: the
    ``hidden`` layers' transposed weights and padded thresholds, the last
    layer's weights, every layer's inputs (``hidden`` and ``last``) and
    the affine map."""
    return (tuple(layer.transposed_weights() for layer in hidden),
            tuple(dense_kernels.word_thresholds(layer) for layer in hidden),
            last.transposed_weights(),
            numpy.array([layer.n_in for layer in hidden + [last]],
                        numpy.int64),
            numpy.array([getattr(last, name) for name in (
                'mean', 'inv_std', 'gamma', 'beta')], numpy.float32))


def _binarized_tail(layers):
    """Whether ``layers`` are one or more ``'xnor'`` ``'sign'`` layers
    and an ``'xnor'`` ``'affine'`` one."""
    return len(layers) > 1 and all(
        layer.kind == 'xnor' for layer in layers) and all(
        layer.output == 'sign' for layer in layers[:-1]) and \
        layers[-1].output == 'affine'


def tail_plan(layers):
    """``(kernel, arguments)`` of the ``'tail'`` kernel for the dense
    ``layers`` after a ConvNet's convolutions (:func:`_binarized_tail`),
    made once per list of layers; ``None`` for other layers."""
    layers = list(layers)

    def make():
        if not _binarized_tail(layers):
            return None
        return dense_kernels.numba_kernels()['tail'], _dense_arguments(
            layers[:-1], layers[-1])
    return _cached_plan('tail_plan', layers, make)


def convnet_plan(layers):
    """``(kernel, arguments)`` of a whole binarized ConvNet in one call
    (:mod:`qnn.packed.convnet_kernels`), made once per list of
    ``layers``; ``None`` unless the first layer reads pixels, the other
    convolutions are ``'conv_xnor'`` ones, the dense layers after them
    have a :func:`tail_plan` and the last maps are their input word for
    word."""
    layers = list(layers)

    def make():
        convs, dense = layers[:_conv_count(layers)], layers[
            _conv_count(layers):]
        if not convs or not dense or convs[0].kind != 'conv_pixels' or any(
                layer.kind != 'conv_xnor' for layer in convs[1:]) or \
                tail_plan(dense) is None or \
                not convnet_kernels.flattens_as_words(convs, dense[0].n_in):
            return None
        tail = _dense_arguments(list(dense[:-1]), dense[-1])
        widest = max([dense[0].n_in] + [len(T) for T in tail[1]])
        widest = -(-widest // 64) * 64
        return convnet_kernels.network_kernel(convs), \
            convnet_kernels.plan_arguments(convs) + (widest,) + tail
    return _cached_plan('convnet_plan', layers, make)


def _cached_plan(name, layers, make):
    """``make()``, made once per list of ``layers`` (kept with the first
    layer, keyed by the layers' ids; the layers themselves are kept with
    it, so that their ids stay theirs)."""
    key = (name,) + tuple(map(id, layers))
    return layers[0].cached(key, lambda: (tuple(layers), make()))[1]


def mlp_plan(layers):
    """``(kernels, arguments)`` of the ``'network'`` kernels for a
    binarized MLP (a ``'planes'`` layer, one or more ``'xnor'`` ones, an
    ``'affine'`` output), made once per list of layers; ``None`` for any
    other network."""
    layers = list(layers)

    def make():
        if layers[0].kind != 'planes' or layers[0].output != 'sign' or \
                not _binarized_tail(layers[1:]):
            return None
        k = dense_kernels.numba_kernels()
        words = n_words(layers[0].n_in)
        tail = _dense_arguments(layers[1:-1], layers[-1])
        args = (layers[0].transposed_weights(),
                dense_kernels.word_thresholds(layers[0])) + tail[:3] + (
            numpy.array([layer.n_in for layer in layers], numpy.int64),
            tail[4])
        return k['network'](words), args
    return _cached_plan('mlp_plan', layers, make)


def _run_mlp(plan, x):
    """The sums and logits of a binarized MLP (:func:`mlp_plan`) on
    ``uint8`` pixels ``x``: one image per core, or a batch of fewer
    images than numba has threads on the calling thread alone
    (:func:`qnn.backends.cpu_kernels.by_batch`)."""
    kernel, args = plan
    return _call_for_logits(kernel, x, args)


def _run_numba_layers(layers, x):
    k = dense_kernels.numba_kernels()
    for index, layer in enumerate(layers):
        if layer.kind in CONV_KINDS:
            x = conv_kernels.numba_layer(layer, x)
            continue
        x = numpy.require(_dense_input(layers, index, x), requirements=[
            'C', 'W'])
        sums = _numba_dense_sums(k, layer, x)
        if layer.output != 'sign':
            return sums
        x = numpy.empty((len(sums), n_words(layer.n_out)), numpy.uint64)
        k['threshold_pack'](sums, dense_kernels.word_thresholds(layer), x)
    raise ValueError('the network has no output layer')


def _numba_dense_sums(k, layer, x):
    sums = numpy.empty((len(x), layer.n_out), numpy.int64)
    if layer.kind == 'planes':
        k['planes'](x, layer.transposed_weights(), sums)
    else:
        k['xnor'](x, layer.transposed_weights(), layer.n_in, sums)
    return sums


def _run_cupy(layers, pixels):
    if any(layer.kind in LEVEL_KINDS for layer in layers):
        raise ValueError('no CUDA kernels for k-bit layers: run it on the '
                         'CPU (--device -1)')
    import cupy
    k = dense_kernels.cupy_kernels(cupy)
    x = cupy.asarray(pixels, dtype=cupy.uint8)
    for index, layer in enumerate(layers):
        if layer.kind in CONV_KINDS:
            x = conv_kernels.cupy_layer(layer, x)
            continue
        if index and layers[index - 1].kind in CONV_KINDS:
            x = conv_kernels.cupy_flatten(x, layers[index - 1].conv[
                'channels'])
        sums = _cupy_dense_sums(cupy, k, layer, x)
        if layer.output != 'sign':
            return sums
        B, M = sums.shape
        x = cupy.zeros((B, n_words(M)), cupy.uint64)
        k['threshold_pack'](*dense_kernels.cuda_grid(B * M), (
            sums, cupy.asarray(layer.thresholds, cupy.int32), x,
            numpy.int32(B), numpy.int32(M), numpy.int32(n_words(M))))
    raise ValueError('the network has no output layer')


def _cupy_dense_sums(cupy, k, layer, x):
    W = layer.device_weights(cupy)
    M, K = W.shape
    B = len(x)
    sums = cupy.empty((B, M), cupy.int64)
    if layer.kind == 'planes':
        # the bit planes are packed on the GPU
        shifts = cupy.arange(PIXEL_BITS, dtype=cupy.uint8)
        P = pack_bits((x[:, None, :] >> shifts[None, :, None]) & 1)
        k['planes_sums'](*dense_kernels.cuda_grid(B * M), (
            cupy.ascontiguousarray(P), W, sums, numpy.int32(B),
            numpy.int32(M), numpy.int32(K)))
    else:
        k['xnor_sums'](*dense_kernels.cuda_grid(B * M), (
            x, W, sums, numpy.int32(B), numpy.int32(M), numpy.int32(K),
            numpy.int32(layer.n_in)))
    return sums


def layer_sums(layers, pixels, backend='numba'):
    """Runs the packed layers on 8-bit pixels ``(B, n)`` and returns the
    integer sums of the last layer's units ``(B, units)`` (``int64``; a
    CuPy array for ``'cupy'``).

    Args:
        layers: :class:`qnn.packed.format.Layer` s, from the first (on the
            pixels) to the output layer.
        pixels (ndarray): ``uint8`` images, one per row.
        backend (str): ``'numba'``, ``'numpy'`` or ``'cupy'``.
    """
    if backend == 'numpy':
        return _run_numpy(layers, numpy.asarray(pixels, numpy.uint8))
    if backend == 'numba':
        return _run_numba(layers, pixels)
    if backend == 'cupy':
        return _run_cupy(layers, pixels)
    raise ValueError('unknown backend {!r}'.format(backend))


def sign_layer(layer, x, backend='numba'):
    """Output bits ``bool`` ``(B, n_out)`` of one dense ``'sign'`` layer:
    ``x`` is ``uint8`` pixels for ``'planes'``, packed words for
    ``'xnor'``."""
    if backend == 'numpy':
        sums = dense_kernels.REFERENCE_SUMS[layer.kind](
            x, layer.weights, layer.n_in)
        return sums >= layer.thresholds
    k = dense_kernels.numba_kernels()
    x = numpy.require(x, numpy.uint8 if layer.kind == 'planes'
                      else numpy.uint64, ['C', 'W'])
    sums = _numba_dense_sums(k, layer, x)
    out = numpy.empty((len(x), n_words(layer.n_out)), numpy.uint64)
    k['threshold_pack'](sums, dense_kernels.word_thresholds(layer), out)
    return unpack_bits(out, layer.n_out)


def affine_logits(sums, layer):
    """Logits of the output ``layer`` (``'affine'``) from its integer sums,
    in the float32 order of Chainer's ``fixed_batch_normalization``:
    ``((a - mean) * inv_std) * gamma + beta`` (NumPy or CuPy)."""
    if isinstance(sums, numpy.ndarray):
        xp = numpy
    else:
        import cupy as xp
    x = sums.astype(numpy.float32)
    for name, op in (('mean', xp.subtract), ('inv_std', xp.multiply),
                     ('gamma', xp.multiply), ('beta', xp.add)):
        op(x, xp.asarray(getattr(layer, name)), out=x)
    return x


def forward(network, pixels, backend='numba'):
    """Logits ``(B, classes)`` of the packed ``network`` for ``uint8``
    ``pixels`` ``(B, n)`` (read as ``input.pixel_thresholds`` says:
    :func:`qnn.packed.format.input_values`)."""
    pixels = input_values(network.input, pixels)
    if backend == 'numba' and network.layers[0].kind not in LEVEL_KINDS:
        # the output layer's affine map in the last kernel: the least
        # Python a call
        x = numpy.require(pixels, numpy.uint8, ['C', 'W'])
        plan = mlp_plan(network.layers)
        sums, logits = _run_mlp(plan, x) if plan is not None else \
            _run_convnet(network.layers, x)
        if logits is not None:
            return logits
        return affine_logits(sums, network.layers[-1])
    return affine_logits(layer_sums(network.layers, pixels, backend),
                         network.layers[-1])


def warm_up(layers, pixels, backend='numba'):
    """Runs ``layers`` on the first image and on the first two, so that
    the kernels of ``backend`` for one image and for more (numba, CUDA)
    are compiled before anything is timed."""
    layer_sums(layers, pixels[:1], backend)
    layer_sums(layers, pixels[:2], backend)

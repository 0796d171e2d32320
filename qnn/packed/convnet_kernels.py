"""A binarized ConvNet from pixels to logits in one numba call: each image
goes through its ``'conv_pixels'`` layer, its ``'conv_xnor'`` layers and
its dense ``'xnor'`` layers on one core, its feature maps in that core's
cache, with one call's Python a network instead of one a layer (at one
image, that Python and the kernels' dispatch were most of the small
ConvNet's time: 48 us, of which its kernels' work is a fraction).

The steps are those of the layer-by-layer kernels, inlined:
:func:`qnn.packed.conv_kernels.conv_pixels_image`,
:func:`qnn.packed.conv_kernels.conv_xnor_image` and the dense layers'
``xnor_layers`` (:mod:`qnn.packed.dense_kernels`); a network kernel is
compiled once for each sequence of convolution geometries.
"""
import concurrent.futures

import numpy

from qnn.backends import cpu_kernels
from qnn.packed import conv_kernels
from qnn.packed import dense_kernels
from qnn.packed.bits import WORD_BITS

_chains = {}


def plan_arguments(convs):
    """The arguments of :func:`network_kernel`'s kernel for the
    convolutions ``convs`` (a ``'conv_pixels'`` layer, then ``'conv_xnor'``
    ones), before the dense layers': the first layer's arguments and the
    shape of its output, and the other layers' as a tuple."""
    first, rest = convs[0], convs[1:]
    return ((conv_kernels.numba_arguments(first) +
             (conv_kernels.numba_out_shape(first),)),
            tuple(conv_kernels.numba_arguments(layer) +
                  (conv_kernels.numba_out_shape(layer),) for layer in rest))


def flattens_as_words(convs, n_in):
    """Whether the last convolution's maps are the dense layers' input
    word for word: whole words of channels, ``n_in`` values."""
    C, H, Wd = convs[-1].out_shape
    return C % WORD_BITS == 0 and C * H * Wd == n_in


def network_kernel(convs):
    """``kernel(P, first, rest, widest, hidden_WT, hidden_T, last_WT,
    n_ins, A, sums, logits)``: the sums and logits of the network on
    pixels ``P`` ``(B, C, H, W)``, ``first`` and ``rest`` the
    convolutions' arguments (:func:`plan_arguments`), ``widest`` the
    widest dense activation in values, the rest those of the dense
    layers' ``'tail'`` kernel (:mod:`qnn.packed.dense_kernels`)."""
    images = tuple(conv_kernels.numba_image(layer) for layer in convs)
    key = tuple(map(id, images))
    if key not in _chains:
        numba = cpu_kernels.import_numba()
        xnor_layers = dense_kernels.numba_kernels()['xnor_layers']
        _chains[key] = _over_threads(numba, _network(
            numba, images[0], _chain(numba, images[1:]), xnor_layers))
    return _chains[key]


def _over_threads(numba, kernel):
    """``call(P, *args)``: ``kernel(P, lo, hi, *args)`` on the images
    ``lo:hi`` of ``P`` in as many parts as numba has threads, each on a
    thread of a pool, or a batch of fewer images on the calling thread.
    Not a numba parallel loop: one takes no tuple of arrays of different
    kinds, which the layers' arguments are."""
    pool = []

    def call(P, *args):
        threads = numba.get_num_threads()
        if len(P) < threads:
            kernel(P, 0, len(P), *args)
            return
        if len(pool) != 1 or pool[0][0] != threads:
            pool[:] = [(threads, concurrent.futures.ThreadPoolExecutor(
                threads, 'qnn-convnet'))]
        edges = numpy.linspace(0, len(P), threads + 1).astype(int)
        parts = [pool[0][1].submit(kernel, P, lo, hi, *args)
                 for lo, hi in zip(edges[:-1], edges[1:])]
        for part in parts:
            part.result()
    return call


def _chain(numba, images):
    """``run(maps, arguments)``: the ``'conv_xnor'`` one-image steps
    ``images`` in turn on one image's feature maps, each with its own
    arguments (its :func:`qnn.packed.conv_kernels.numba_arguments` and
    output shape); the last one's maps."""
    if not images:
        @numba.njit(inline='always')
        def same(maps, arguments):
            return maps
        return same
    image, rest = images[0], _chain(numba, images[1:])

    @numba.njit(inline='always')
    def run(maps, arguments):
        a = arguments[0]
        out = numpy.zeros(a[7], numpy.uint64)
        image(maps, a[0], a[1], a[2], a[3], a[4], a[5], a[6], out)
        return rest(out, arguments[1:])
    return run


def _network(numba, first_image, chain, xnor_layers):
    @numba.njit(nogil=True)
    def convnet(P, lo, hi, first, rest, widest, hidden_WT, hidden_T,
                last_WT, n_ins, A, sums, logits):
        for b in range(lo, hi):
            maps = numpy.zeros(first[5], numpy.uint64)
            first_image(P[b], first[0], first[1], first[2], first[3],
                        first[4], maps)
            flat = chain(maps, rest).reshape(-1)
            acc = numpy.zeros(widest, numpy.int64)
            h = numpy.zeros(widest // WORD_BITS, numpy.uint64)
            h[:flat.size] = flat
            xnor_layers(h, acc, hidden_WT, hidden_T, last_WT, n_ins, A, b,
                        sums, logits)

    return convnet

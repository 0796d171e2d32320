"""The CUDA source of the packed convolutions, run on the CPU and on a GPU.

No machine of CI has a GPU, so the kernels' arithmetic is also checked
here: the source is compiled with g++ under a header that stands in for
CUDA (one thread after another: ``blockIdx.x`` counts them, ``__popcll``
is the builtin popcount, ``atomicOr`` a plain OR), and its output compared
with the NumPy reference on the layer shapes of test_packed_convnet.py:
odd sizes, channel counts that fill no word, more than a word, flipped
channels and ties. The GPU-marked tests run the same kernels through CuPy.
"""
import ctypes
import shutil
import subprocess

import numpy
import pytest

from qnn.packed import conv_kernels
from qnn.packed.format import n_words

from helpers import SHAPES, folded_layer, random_maps

CUDA_ON_CPU = r'''
#include <algorithm>
using std::min;
struct Index { unsigned int x; };
static Index blockIdx, threadIdx, blockDim = {1};
#define __global__
#define __device__
static int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
static unsigned long long atomicOr(unsigned long long* p,
                                   unsigned long long v) {
    unsigned long long old = *p;
    *p |= v;
    return old;
}
'''

LAUNCHERS = r'''
extern "C" void run_conv(long long n, const unsigned long long* X,
                         const unsigned char* P,
                         const unsigned long long* WX, const int* WP,
                         const int* T, const int* flipped,
                         unsigned long long* out, const int* sizes) {
    for (long long i = 0; i < n; ++i) {
        blockIdx.x = i;
        conv(X, P, WX, WP, T, flipped, out, sizes[0], sizes[1], sizes[2],
             sizes[3], sizes[4], sizes[5], sizes[6], sizes[7], sizes[8],
             sizes[9], sizes[10]);
    }
}
extern "C" void run_flatten(long long n, const unsigned long long* maps,
                            unsigned long long* out, const int* sizes) {
    for (long long i = 0; i < n; ++i) {
        blockIdx.x = i;
        flatten(maps, out, sizes[0], sizes[1], sizes[2], sizes[3],
                sizes[4]);
    }
}
'''


@pytest.fixture(scope='module')
def cuda_on_cpu(tmp_path_factory):
    compiler = shutil.which('g++')
    if compiler is None:
        pytest.skip('g++ is not installed')
    folder = tmp_path_factory.mktemp('cuda')
    source = folder / 'kernels.cpp'
    source.write_text(CUDA_ON_CPU + conv_kernels.CUDA_SOURCE + LAUNCHERS)
    library = folder / 'kernels.so'
    subprocess.run([compiler, '-O1', '-shared', '-fPIC', '-o', str(library),
                    str(source)], check=True)
    return ctypes.CDLL(str(library))


def pointer(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def run_on_cpu(lib, layer, x):
    """conv_kernels.cupy_layer's launch, on the CPU build."""
    C, H, W = layer.conv['in_shape']
    K, H2, W2 = layer.out_shape
    out = numpy.zeros((len(x), H2, W2, n_words(K)), numpy.uint64)
    xnor = layer.kind == 'conv_xnor'
    unused = numpy.zeros(1, numpy.uint64)
    X = numpy.ascontiguousarray(x, numpy.uint64) if xnor else unused
    P = unused if xnor else numpy.ascontiguousarray(x, numpy.uint8)
    WX = numpy.ascontiguousarray(layer.weights) if xnor else unused
    WP = unused if xnor else numpy.ascontiguousarray(
        conv_kernels.weight_taps(layer).reshape(K, -1), numpy.int32)
    sizes = numpy.array([xnor, len(x), C, H, W, x.shape[-1] if xnor else 0,
                         K, H2, W2, 2 if layer.conv['pool'] else 1,
                         n_words(K)], numpy.int32)
    lib.run_conv(ctypes.c_longlong(len(x) * H2 * W2 * K), pointer(X),
                 pointer(P), pointer(WX), pointer(WP),
                 pointer(layer.thresholds.astype(numpy.int32)),
                 pointer(layer.flipped.astype(numpy.int32)), pointer(out),
                 pointer(sizes))
    return out


@pytest.mark.parametrize('shape', SHAPES)
def test_cuda_xnor_convolution_on_cpu_is_the_reference(cuda_on_cpu, shape):
    rng = numpy.random.RandomState(sum(shape[:4]))
    layer, _, _ = folded_layer(rng, shape, first=False)
    _, words = random_maps(rng, 3, *shape[:3])
    numpy.testing.assert_array_equal(
        run_on_cpu(cuda_on_cpu, layer, words),
        conv_kernels.reference_layer(layer, words))


@pytest.mark.parametrize('shape', [(1, 28, 28, 16, True),
                                   (3, 9, 7, 5, False)])
def test_cuda_pixel_convolution_on_cpu_is_the_reference(cuda_on_cpu, shape):
    rng = numpy.random.RandomState(7)
    layer, _, _ = folded_layer(rng, shape, first=True)
    C, H, W = shape[:3]
    pixels = rng.randint(0, 256, size=(3, C * H * W)).astype(numpy.uint8)
    numpy.testing.assert_array_equal(
        run_on_cpu(cuda_on_cpu, layer, pixels),
        conv_kernels.reference_layer(layer, pixels))


@pytest.mark.parametrize('channels', [5, 64, 70])
def test_cuda_flatten_on_cpu_is_flatten(cuda_on_cpu, channels):
    _, words = random_maps(numpy.random.RandomState(1), 2, channels, 3, 2)
    expected = conv_kernels.flatten(words, channels)
    out = numpy.zeros_like(expected)
    sizes = numpy.array([2, 6, words.shape[-1], channels, out.shape[1]],
                        numpy.int32)
    cuda_on_cpu.run_flatten(ctypes.c_longlong(2 * 6 * channels),
                            pointer(numpy.ascontiguousarray(words)),
                            pointer(out), pointer(sizes))
    numpy.testing.assert_array_equal(out, expected)


@pytest.mark.gpu
@pytest.mark.parametrize('shape', SHAPES)
def test_cupy_convolution_is_the_reference(shape):
    import cupy
    rng = numpy.random.RandomState(sum(shape[:4]))
    layer, _, _ = folded_layer(rng, shape, first=False)
    _, words = random_maps(rng, 3, *shape[:3])
    numpy.testing.assert_array_equal(
        cupy.asnumpy(conv_kernels.cupy_layer(layer, cupy.asarray(words))),
        conv_kernels.reference_layer(layer, words))


@pytest.mark.gpu
def test_cupy_convnet_is_the_reference():
    import cupy
    rng = numpy.random.RandomState(11)
    first, _, _ = folded_layer(rng, (1, 28, 28, 16, True), first=True)
    second, _, _ = folded_layer(rng, (16, 14, 14, 70, True), first=False)
    pixels = rng.randint(0, 256, size=(4, 784)).astype(numpy.uint8)
    maps = conv_kernels.cupy_layer(first, cupy.asarray(pixels))
    numpy.testing.assert_array_equal(
        cupy.asnumpy(maps), conv_kernels.reference_layer(first, pixels))
    maps = conv_kernels.cupy_layer(second, maps)
    expected = conv_kernels.reference_layer(
        second, conv_kernels.reference_layer(first, pixels))
    numpy.testing.assert_array_equal(
        cupy.asnumpy(conv_kernels.cupy_flatten(maps, 70)),
        conv_kernels.flatten(expected, 70))


def test_other_geometries_run_on_the_host(monkeypatch):
    # a 5x5 valid convolution: cupy_layer copies it to the host, runs the
    # numba kernel and copies the map back (a stand-in CuPy here)
    import sys
    import types
    fake = types.SimpleNamespace(asarray=lambda a: ('device', a),
                                 asnumpy=lambda a: a[1],
                                 ndarray=type('ndarray', (), {}))
    monkeypatch.setitem(sys.modules, 'cupy', fake)
    rng = numpy.random.RandomState(3)
    layer, _, _ = folded_layer(rng, (4, 12, 12, 8, True), first=False)
    # the same weights' first 5 taps cannot make a 5x5 layer: new weights
    layer.conv.update(ksize=5, pad=0)
    layer.weights = layer.arrays['weights'] = numpy.ascontiguousarray(
        numpy.repeat(layer.weights[:, :1], 25, axis=1))
    _, words = random_maps(rng, 3, 4, 12, 12)
    where, out = conv_kernels.cupy_layer(layer, ('device', words))
    assert where == 'device' and out.shape == (3, 4, 4, 1)
    numpy.testing.assert_array_equal(
        out, conv_kernels.reference_layer(layer, words))

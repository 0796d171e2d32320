"""What the fused CPU loops of the training step (numba) share.

NumPy runs one elementwise operation per pass over memory: Adam's update
of the 1.8 M weights of the MNIST MLP is a dozen passes, the clip to
[-1, 1] one more, the sign of a weight matrix three. A numba loop does
each in one pass, doing for every element the same float operations in
the same order as the NumPy reference, so results are bit for bit the
reference's (``fastmath`` off: no reassociation, no fused multiply-add).
Each loop lives with its owner, its NumPy reference beside it, as
Chainer keeps Adam's kernel in ``adam.py``:

* Adam's step (then the clip): :mod:`qnn.optimizers.inplace_adam`;
* the shift-based AdaMax step: :mod:`qnn.optimizers.shift_adamax`, with
  AP2 on the float's bits from :mod:`qnn.functions.ap2`;
* the sign and the straight-through gradient: :mod:`qst`;
* im2col and col2im: :mod:`qnn.functions.quantized_convolution_2d`;
* 2x2 max pooling and its gradient: :mod:`qnn.functions.max_pooling_2x2`;
* batch normalization with the sign:
  :mod:`qnn.functions.batch_normalization_sign`.

:func:`available` says whether numba is there; without it (or with
``QNN_CPU_KERNELS=numpy`` in the environment) the owners use their NumPy
code, which is also what the tests compare the loops with. The loops
compile on first use (about a second each; numba's cache keeps them
between runs).
"""
import os

import numpy

# the optimizers' loops run on all cores from this many elements on
# (qnn.optimizers.inplace_adam: starting a parallel loop costs about 0.1
# ms on 2 cores)
PARALLEL_MIN = 1 << 15
KERNEL_DTYPES = (numpy.float32, numpy.float64)


def available():
    """Whether the numba kernels can be used (numba importable and not
    turned off with ``QNN_CPU_KERNELS=numpy``)."""
    if os.environ.get('QNN_CPU_KERNELS', 'numba') == 'numpy':
        return False
    try:
        import_numba()
    except ImportError:
        return False
    return True


def import_numba():
    """numba, with its parallel loops on its own thread pool ('workqueue')
    unless ``NUMBA_THREADING_LAYER`` says otherwise: the default OpenMP
    pool spins after each loop, and on a 2-core machine with anything else
    running (OpenBLAS's threads, another process) a step took twice as
    long."""
    import numba
    if 'NUMBA_THREADING_LAYER' not in os.environ:
        numba.config.THREADING_LAYER = 'workqueue'
    return numba


def usable(*arrays, strided=False):
    """Whether the kernels take these arrays: NumPy, C-contiguous (any
    strides with ``strided``), all of one dtype, float32 or float64, and
    the kernels available."""
    dtype = arrays[0].dtype
    return all(isinstance(a, numpy.ndarray) and a.dtype == dtype and
               (strided or a.flags.c_contiguous) for a in arrays) and \
        dtype in KERNEL_DTYPES and available()


class LazyKernels(object):

    """The numba kernels of a module by name, built by ``build(numba)`` on
    first use (numba is imported only then)."""

    def __init__(self, build):
        self._build = build
        self._kernels = None

    def __getitem__(self, name):
        if self._kernels is None:
            self._kernels = self._build(import_numba())
        return self._kernels[name]


def renamed(function, name):
    """A copy of a Python function under another name (and qualname):
    numba's cache tells functions apart by name and types, not by the
    ``parallel`` flag, so a loop compiled both ways needs two names."""
    import types
    copy = types.FunctionType(function.__code__.replace(co_name=name,
                                                        co_qualname=name),
                              function.__globals__, name,
                              function.__defaults__, function.__closure__)
    copy.__qualname__ = name
    return copy


def by_batch(numba, kernel):
    """``call(x, *args)``: the parallel numba ``kernel`` (a loop over the
    rows of ``x`` on all cores), or for fewer rows than numba has threads
    its twin compiled without ``parallel`` (``call.one_core``), on the
    calling thread alone: a parallel loop waits for every thread, so on a
    2-core machine with another process on the other core one image took
    0.6-1.8 ms instead of 12 us (the packed MLP, 2026-12-07)."""
    one_core = numba.njit(renamed(
        kernel.py_func, kernel.py_func.__name__ + '_one_core'))

    def call(x, *args):
        if len(x) < numba.get_num_threads():
            return one_core(x, *args)
        return kernel(x, *args)
    call.one_core = one_core
    call.parallel = kernel
    return call

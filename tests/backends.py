"""Backend configurations for chainer.testing.inject_backend_tests.

The GPU and ChainerX entries carry chainer's `gpu` / `chainerx` marks and are
skipped by conftest.py where the machine lacks them.
"""
import numpy

BACKENDS = [
    {},  # NumPy
    {'use_cuda': True},  # CuPy
    {'use_chainerx': True, 'chainerx_device': 'native:0'},
    {'use_chainerx': True, 'chainerx_device': 'cuda:0'},
]


def seed_generators(seed):
    """Seeds NumPy's global generator and, where CUDA is available, CuPy's:
    a stochastic rounding on a GPU draws from ``cupy.random``."""
    numpy.random.seed(seed)
    from chainer.backends import cuda
    if cuda.available:
        cuda.cupy.random.seed(seed)

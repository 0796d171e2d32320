"""Backend configurations for chainer.testing.inject_backend_tests.

The GPU and ChainerX entries carry chainer's `gpu` / `chainerx` marks and are
skipped by conftest.py where the machine lacks them.
"""
BACKENDS = [
    {},  # NumPy
    {'use_cuda': True},  # CuPy
    {'use_chainerx': True, 'chainerx_device': 'native:0'},
    {'use_chainerx': True, 'chainerx_device': 'cuda:0'},
]

"""Threads of a process that runs packed networks: set before NumPy and
numba start (standard library only).

* ``OPENBLAS_THREAD_TIMEOUT=4``: OpenBLAS's threads sleep as soon as a
  product ends, instead of spinning for a while on the core that the
  packed kernels need next (as train_mnist.py sets it for training).
* ``NUMBA_THREADING_LAYER=default``: numba's own choice, OpenMP where it
  is installed, instead of the 'workqueue' pool that
  :func:`qnn.backends.cpu_kernels.import_numba` picks for training. On the
  2-core machine of docs/deployment.md a parallel loop of the workqueue
  pool took about 100 us to start, OpenMP's a few: the binarized MLP's
  batch of one image ran in 19-42 us with OpenMP, 128-145 us with the
  workqueue (2026-12-06).

Either can still be chosen in the environment.
"""
import os

SETTINGS = (('OPENBLAS_THREAD_TIMEOUT', '4'),
            ('NUMBA_THREADING_LAYER', 'default'))


def configure():
    """Sets the defaults above where the environment has no value."""
    for name, value in SETTINGS:
        os.environ.setdefault(name, value)

"""Elementwise NumPy work on several cores at once.

NumPy runs one elementwise operation on one core, but releases the GIL in
its loops over large arrays; so cutting the arrays into contiguous pieces
and giving each piece to a thread runs the same operations on every core.
Each element still goes through exactly the same arithmetic, so results are
bit for bit those of one thread. CuPy arrays are never cut (the GPU is
parallel already).
"""
import concurrent.futures
import os

import numpy

# Below this many elements per piece, handing work to a thread costs more
# than it saves.
MIN_CHUNK = 1 << 16

_threads = os.cpu_count() or 1
_executors = {}


def set_threads(threads):
    """Sets how many threads :func:`run` uses by default (at least 1);
    e.g. the cores of a machine divided by the processes sharing it."""
    global _threads
    _threads = max(1, int(threads))


def get_threads():
    return _threads


def run(function, arrays, threads=None):
    """Calls ``function(*pieces)`` on pieces of ``arrays`` at the same time.

    ``arrays`` are arrays of one size, all C-contiguous NumPy arrays (else
    ``function(*arrays)`` runs once, as it also does when they are too small
    to be worth cutting). ``function`` must work elementwise, writing only
    into its arguments.
    """
    threads = _threads if threads is None else threads
    size = arrays[0].size
    pieces = min(threads, size // MIN_CHUNK)
    if pieces < 2 or not all(isinstance(a, numpy.ndarray) and
                             a.flags.c_contiguous for a in arrays):
        function(*arrays)
        return
    flat = [a.reshape(-1) for a in arrays]  # views
    bounds = [size * i // pieces for i in range(pieces + 1)]
    if pieces not in _executors:
        _executors[pieces] = concurrent.futures.ThreadPoolExecutor(
            pieces - 1, thread_name_prefix='cpu_threads')
    futures = [_executors[pieces].submit(function, *[a[lo:hi] for a in flat])
               for lo, hi in zip(bounds[1:-1], bounds[2:])]
    function(*[a[:bounds[1]] for a in flat])
    for future in futures:
        future.result()

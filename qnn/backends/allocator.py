"""glibc's allocator set up for training's large temporary arrays.

A training step of the small ConvNet at batch 100 allocates and frees the
same arrays of 5-11 MB each time (its first convolution's output, the
im2col columns of the others: ``100 x 14 x 14 x 144`` float32 is 11.3 MB).
glibc gives them back to the system as they are freed: either each array
is its own ``mmap`` (below its dynamic mmap threshold) or the heap's top
is trimmed with ``brk`` after each step; the next step then faults in
40 MB of fresh zeroed pages. Which of the two a process falls into
follows the threshold's history, so the step took one of two times
(0.030-0.049 s against 0.024 s, ``bench/cnn_step.py``, 2026-12-07).

:func:`keep_freed_memory` fixes both thresholds at start-up: arrays up to
32 MB (the largest mmap threshold glibc takes on 64 bits) come from the
heap, and up to 256 MB of freed heap is kept for the next step instead
of being trimmed. The peak of a process's memory is unchanged; what it
freed stays with it.
"""
import ctypes
import ctypes.util

# mallopt's parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20
TOP_PAD = 16 << 20


def _glibc():
    """glibc as a ctypes library, or ``None`` under another C library
    (musl, macOS), whose allocator has no ``mallopt``."""
    name = ctypes.util.find_library('c')
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # glibc's own
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory():
    """Sets glibc's mmap and trim thresholds for large temporary arrays
    (see the module's text); returns whether they were set (``False``
    without glibc)."""
    libc = _glibc()
    if libc is None:
        return False
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (M_TOP_PAD, TOP_PAD)))

import json
import subprocess
import sys

import pytest

from qnn.backends import allocator

from helpers import ROOT

# In a fresh process: a 16 MB array allocated and freed as a training step
# frees its columns; glibc's mallinfo2 before, with it and after.
PROBE = r'''
import ctypes, json, sys
import numpy
from qnn.backends import allocator

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks',
        'fsmblks', 'uordblks', 'fordblks', 'keepcost')]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
kept = allocator.keep_freed_memory() if sys.argv[1] == 'keep' else None
before = libc.mallinfo2()
a = numpy.ones(4 << 20, numpy.float32)
during = libc.mallinfo2()
del a
after = libc.mallinfo2()
print(json.dumps({'kept': kept,
                  'mapped': during.hblkhd - before.hblkhd,
                  'heap_after': after.arena - before.arena}))
'''


def probe(mode):
    out = subprocess.run([sys.executable, '-c', PROBE, mode], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


@pytest.mark.skipif(allocator._glibc() is None, reason='glibc only')
def test_freed_arrays_stay_in_the_heap():
    kept = probe('keep')
    assert kept['kept'] is True
    assert kept['mapped'] == 0  # from the heap, not an mmap of its own
    assert kept['heap_after'] >= 16 << 20  # not trimmed when freed
    # glibc's defaults: the array is an mmap of its own, unmapped when freed
    default = probe('default')
    assert default['mapped'] >= 16 << 20
    assert default['heap_after'] < 16 << 20

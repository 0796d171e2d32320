"""Runs a command under an address-space cap and reports its peak memory.

    python capped_child.py CAP_BYTES BIND_PERMISSIONS REPORT COMMAND...

sets ``RLIMIT_AS`` to ``CAP_BYTES``, with ``BIND_PERMISSIONS`` ``1`` drops
the capabilities that let root read any file (so that file permissions bind
the command as they bind anyone), runs ``COMMAND`` in a child process,
writes the child's peak resident bytes (``ru_maxrss``) to the file
``REPORT`` and exits with the child's status (128 + N for a signal N).

The command runs as a grandchild of the test so that its peak memory is its
own: a process forked from pytest starts with pytest's resident pages,
which ``ru_maxrss`` counts even after ``exec``. This script imports the
standard library only, so the command's fork starts small.
"""
import ctypes
import os
import resource
import sys


def drop_root_file_access():
    """Drops, where this process is root, ``CAP_DAC_OVERRIDE`` and
    ``CAP_DAC_READ_SEARCH`` from its bounding, permitted, effective and
    inheritable sets (a root ``exec`` grants the bounding set again)."""
    if os.geteuid() != 0:
        return

    class Header(ctypes.Structure):
        _fields_ = [('version', ctypes.c_uint32), ('pid', ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [('effective', ctypes.c_uint32),
                    ('permitted', ctypes.c_uint32),
                    ('inheritable', ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), 'prctl')
    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), 'capget')
    keep = ~(1 << 1 | 1 << 2) & 0xffffffff
    data[0].effective &= keep
    data[0].permitted &= keep
    data[0].inheritable &= keep
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), 'capset')


def main(argv):
    cap, bind, report, command = int(argv[1]), argv[2] == '1', argv[3], \
        argv[4:]
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    if bind:
        drop_root_file_access()
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    with open(report, 'w') as f:
        f.write('{}\n'.format(usage.ru_maxrss * 1024))
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == '__main__':
    sys.exit(main(sys.argv))

"""One run per output directory.

Two runs writing to the same ``--out`` would interleave their snapshots,
overwrite each other's log and leave ``--resume auto`` to pick either.
:class:`OutputLock` holds an exclusive lock on ``DIR/.lock`` for the whole
run (``flock``, through ``filelock``): the kernel releases it when the
process ends, however it ends, so a run killed with SIGKILL does not block
the next one. The holder writes its process id to ``DIR/.lock.owner`` so
that the run that is refused can say who holds the directory.
"""
import os

import filelock

LOCK_NAME = '.lock'
OWNER_NAME = '.lock.owner'


class OutputBusy(Exception):
    """Another process holds the output directory."""


class OutputLock(object):

    """Exclusive lock on an output directory, as a context manager.

    Args:
        directory (str): The output directory; it must exist.
    """

    def __init__(self, directory):
        self.directory = directory
        self._lock = filelock.FileLock(os.path.join(directory, LOCK_NAME),
                                       timeout=0)

    def acquire(self):
        """Takes the lock at once, or raises :class:`OutputBusy` naming the
        directory and the process that holds it."""
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise OutputBusy(
                'the output directory {} is in use by another run ({}); wait '
                'for it to end or choose another --out'.format(
                    self.directory, self._owner()))
        with open(os.path.join(self.directory, OWNER_NAME), 'w') as f:
            f.write('{}\n'.format(os.getpid()))

    def release(self):
        self._lock.release()

    def _owner(self):
        try:
            with open(os.path.join(self.directory, OWNER_NAME)) as f:
                return 'process {}'.format(int(f.read().strip()))
        except (OSError, ValueError):
            return 'process unknown'

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()

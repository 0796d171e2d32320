"""Data-parallel training over MPI with ChainerMN (``--communicator``).

``mpiexec -n N python train_mnist.py --communicator naive`` starts N
processes (ranks). Every rank holds the whole model; rank 0 reads MNIST and
scatters it, so each rank trains on its own 1/N of the training set with
``--batchsize`` images per step. One step over all ranks is one step on the
global minibatch of ``N * batchsize`` images:

* the gradient every rank applies is the mean of the ranks' gradients,
  :math:`g = \\frac{1}{N} \\sum_r g_r`, the gradient of the global minibatch
  (``create_multi_node_optimizer``); every rank then runs the same Adam
  update and the same :class:`weight_clip.WeightClip` hook on the same
  numbers, so the weights stay identical without being sent again;
* batch normalization uses the statistics of the global minibatch,
  :math:`\\mu = \\frac{1}{N} \\sum_r \\overline{x}_r` and
  :math:`\\sigma^2 = \\frac{1}{N} \\sum_r \\overline{x^2}_r - \\mu^2`
  (``MultiNodeBatchNormalization``), so the running statistics are the same
  on every rank too and the model rank 0 saves is the model all ranks
  trained. Unsynchronized batch normalization would normalize each rank by
  its own shard and leave N different sets of running statistics.

train_mnist.py holds the run's :class:`Processes`: every method returns
its argument unchanged for a single process, so the script reads as a
single-process one, with the few calls that change under ``mpiexec``.
"""
import contextlib
import io
import os
import signal
import sys
import threading
import time
import warnings

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import numpy

from qnn.backends import cpu_threads
from qnn.utils.errors import fail

COMMUNICATORS = ('naive', 'flat', 'pure_nccl')
# flat and pure_nccl reduce on the GPU; naive works on CPU and GPU arrays
GPU_COMMUNICATORS = ('flat', 'pure_nccl')
INSTALL = 'run `make mpi` (pip install -r requirements-mpi.txt)'

# ChainerMN marks MultiNodeBatchNormalization experimental on every creation
warnings.filterwarnings(
    'ignore', r'chainermn\.links\.MultiNodeBatchNormalization is experimental',
    FutureWarning)


class MultiNodeError(Exception):

    """The communicator cannot be created; the message (one line) says why
    and what to install."""


def launched_size(environ=None):
    """Number of processes the MPI launcher started this one with: from
    ``PMI_SIZE`` (MPICH's Hydra) or ``OMPI_COMM_WORLD_SIZE`` (Open MPI); 1
    when not started by ``mpiexec``."""
    environ = os.environ if environ is None else environ
    for name in ('PMI_SIZE', 'OMPI_COMM_WORLD_SIZE'):
        try:
            return int(environ[name])
        except (KeyError, ValueError):
            continue
    return 1


def create_communicator(name):
    """Returns the ChainerMN communicator ``name`` over ``MPI_COMM_WORLD``.

    Also installs ChainerMN's hook that aborts the whole MPI job on an
    uncaught exception: the other ranks would otherwise wait forever in their
    next collective call.

    Raises:
        MultiNodeError: mpi4py or its MPI library is missing, or the
            communicator needs CUDA (``flat``, ``pure_nccl``) and there is
            none.
    """
    if name in GPU_COMMUNICATORS and not chainer.backends.cuda.available:
        raise MultiNodeError(
            '--communicator {} reduces on GPUs and needs CUDA through CuPy, '
            'which is not available (run `make gpu` on a machine with NVIDIA '
            'GPUs); on CPUs use --communicator naive'.format(name))
    try:
        from mpi4py import MPI  # NOQA
    except ImportError as e:
        raise MultiNodeError(
            '--communicator needs mpi4py and an MPI, and mpi4py cannot be '
            'imported ({}): {}'.format(e, INSTALL))
    except RuntimeError as e:  # mpi4py's way to say "no libmpi found"
        raise MultiNodeError(
            '--communicator needs mpi4py and an MPI, and mpi4py finds no MPI '
            'library ({}): {}'.format('; '.join(str(e).splitlines()),
                                      INSTALL))
    import chainermn
    try:
        comm = chainermn.create_communicator(name)
    except Exception as e:  # NCCL and CUDA errors have many types
        raise MultiNodeError('cannot create the {} communicator: {}: {}'
                             .format(name, type(e).__name__, e))
    chainermn.global_except_hook.add_hook()
    return comm


@contextlib.contextmanager
def all_or_none(comm):
    """Runs the block on every rank; if it exits on any (``SystemExit``, as
    from ``errors.fail``), every rank exits.

    All ranks exit with the status of the lowest rank that failed, and rank
    0 alone writes that rank's standard error, so the reason appears once.
    Without this a rank that failed alone (rank 0 reading the data, a rank
    whose GPU is missing) would leave the others waiting forever in their
    next collective call. The block must not communicate: its standard error
    is held back until every rank has finished it (one ``allgather``).
    Without ``comm`` it runs the block as it is.
    """
    if comm is None:
        yield
        return
    held, stderr = io.StringIO(), sys.stderr
    sys.stderr = held
    status = None
    try:
        yield
    except SystemExit as e:
        status = 0 if e.code is None else e.code
    finally:
        sys.stderr = stderr
    outcomes = comm.mpi_comm.allgather((status, held.getvalue()))
    failed = [outcome for outcome in outcomes if outcome[0] is not None]
    if not failed:
        stderr.write(held.getvalue())
        return
    status, text = failed[0]
    if comm.rank == 0:
        stderr.write(text)
        stderr.flush()
    raise SystemExit(status)


def exit_on_signals(comm):
    """Makes SIGINT and SIGTERM end this rank at once, without a traceback.

    ``mpiexec`` passes a Ctrl-C (SIGINT) or SIGTERM on to every rank, and the
    ranks receive it in different iterations: one that finished its
    iteration alone would leave the others waiting in their next collective
    call. So every rank leaves at once with exit status 128 + the signal's
    number (130, 143), rank 0 saying so in one line; the newest snapshot is
    that of the last finished epoch (one being written is a temporary file,
    removed by the next run). A signal that was ignored stays ignored.
    """
    stopping = threading.Lock()

    def stop(signum, frame=None):
        if not stopping.acquire(blocking=False):
            while True:  # the other path is ending the process
                time.sleep(1)
        if is_root(comm):
            sys.stderr.write(
                'train_mnist.py: stopped by {} under mpiexec: every rank '
                'stops at once; to continue, run the same command with '
                '--resume auto\n'.format(signal.Signals(signum).name))
            sys.stderr.flush()
        os._exit(128 + signum)

    handled = [signum for signum in (signal.SIGINT, signal.SIGTERM)
               if signal.getsignal(signum) is not signal.SIG_IGN]
    for signum in handled:
        signal.signal(signum, stop)
    if not handled:
        return
    # A Python handler runs in the main thread between bytecodes; a rank
    # blocked in a collective call whose partner has already left would
    # never get there. The C-level handler also writes the signal's number
    # to a pipe, and a thread waiting on it (the collective calls release
    # the GIL) ends the rank.
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)

    def watch():
        while True:
            data = os.read(read_end, 1)
            if data and data[0] in handled:
                stop(data[0])

    threading.Thread(target=watch, name='signals', daemon=True).start()


def size(comm):
    """The number of processes training together (1 without ``comm``)."""
    return 1 if comm is None else comm.size


def is_root(comm):
    """Whether this process writes the output: rank 0, or the only one."""
    return comm is None or comm.rank == 0


def silence_non_root(comm):
    """Sends the standard output of ranks other than 0 to the null device:
    rank 0 prints the header and the report for the job; errors (stderr)
    still come from whichever rank has them."""
    if not is_root(comm):
        sys.stdout = open(os.devnull, 'w')


def device_spec(comm, communicator, spec):
    """The device of this rank: for the GPU communicators the GPU numbered by
    the rank's index on its machine (``intra_rank``), else ``spec``."""
    if comm is not None and communicator in GPU_COMMUNICATORS:
        return '@cupy:{}'.format(comm.intra_rank)
    return spec


def scatter(dataset, comm, shuffle=False, seed=None):
    """Rank 0's ``dataset`` split into ``comm.size`` parts of equal length,
    part ``r`` returned on rank ``r`` (the other ranks pass ``None``).

    ``shuffle=True`` assigns the examples to the parts by a permutation drawn
    from ``seed``. When ``len(dataset)`` is not a multiple of ``comm.size``,
    a few examples are repeated to even out the parts.
    """
    if comm is None:
        return dataset
    import chainermn
    return chainermn.scatter_dataset(dataset, comm, shuffle=shuffle,
                                     seed=seed)


def synchronize_batch_normalization(model, comm):
    """A copy of ``model`` whose :class:`chainer.links.BatchNormalization`
    links are ``chainermn.links.MultiNodeBatchNormalization`` with the same
    parameters, running statistics, decay and eps. The parameter and
    persistent names stay the same, so snapshots load into the
    single-process model."""
    if comm is None:
        return model
    import chainermn
    return chainermn.links.create_mnbn_model(model, comm)


def data_parallel_optimizer(optimizer, comm):
    """``optimizer`` that averages the gradients over the ranks before its
    update (its hooks, such as WeightClip, run on every rank after it).

    ChainerMN's first ``update`` broadcasts rank 0's parameters instead of
    updating, so every rank starts from the same weights."""
    if comm is None:
        return optimizer
    import chainermn
    return chainermn.create_multi_node_optimizer(optimizer, comm)


def data_parallel_evaluator(evaluator, comm):
    """``evaluator`` that reports the mean over the ranks of each rank's
    result on its part of the test set (the mean over the whole test set when
    every part is a whole number of minibatches)."""
    if comm is None:
        return evaluator
    import chainermn
    return chainermn.create_multi_node_evaluator(evaluator, comm)


class MeanOverRanks(chainer.training.Extension):

    """Trainer extension: replaces observations by their mean over the ranks.

    After every iteration each of ``keys`` in the trainer's observation,
    :math:`v_r` on rank :math:`r`, becomes :math:`\\frac{1}{N} \\sum_r v_r`
    on every rank (one float64 allreduce for all keys). The log then reports
    the global minibatch, and every rank sees the same loss, so that the
    divergence check stops all ranks at the same iteration. Its priority
    must be above that of the extensions that read the keys.
    (ChainerMN's ``ObservationAggregator`` would do this, but it needs
    ChainerX.)

    Args:
        comm: ChainerMN communicator.
        keys (tuple of str): Observation keys; each must be observed on every
            rank in every iteration.
    """

    trigger = 1, 'iteration'
    priority = chainer.training.PRIORITY_EDITOR

    def __init__(self, comm, keys=('main/loss', 'main/accuracy')):
        self.comm = comm
        self.keys = tuple(keys)

    def __call__(self, trainer):
        observation = trainer.observation
        values = [observation[key] for key in self.keys]
        local = numpy.array([float(chainer.as_array(v)) for v in values],
                            dtype=numpy.float64)
        mean = self.comm.allreduce(local) / self.comm.size
        for key, value, m in zip(self.keys, values, mean):
            dtype = chainer.as_array(value).dtype
            observation[key] = chainer.Variable(numpy.asarray(m, dtype))


def extend(trainer, comm, priority=None):
    """Adds :class:`MeanOverRanks` for the training loss and accuracy to
    ``trainer`` (nothing without ``comm``)."""
    if comm is not None:
        trainer.extend(MeanOverRanks(comm), priority=priority)


def connect(args):
    """The ChainerMN communicator of ``--communicator`` (``None`` for a
    single process), or one line saying what is missing."""
    if args.communicator is None:
        if launched_size() > 1:
            fail('started by mpiexec as one of {} processes without '
                 '--communicator: each would train alone on the same output '
                 'directory; add --communicator naive'.format(
                     launched_size()))
        return None
    try:
        comm = create_communicator(args.communicator)
    except MultiNodeError as e:
        fail(e)
    silence_non_root(comm)
    exit_on_signals(comm)
    # the ranks on a machine share its cores
    cpu_threads.set_threads((os.cpu_count() or 1) // comm.intra_size)
    return comm


class Processes(object):

    """The processes that train together: this one alone, or the ranks of
    ``mpiexec`` with ``--communicator`` (:func:`connect`). For a single
    process (``comm`` is ``None``) every method returns its argument
    unchanged.

    Attributes:
        comm: The ChainerMN communicator, or ``None``.
        size (int): Number of processes.
        is_root (bool): Whether this process writes the output.
    """

    def __init__(self, args):
        self.comm = connect(args)
        self.communicator = args.communicator
        self.size = size(self.comm)
        self.is_root = is_root(self.comm)

    def all_or_none(self):
        """:func:`all_or_none`: a failure on one rank ends every rank."""
        return all_or_none(self.comm)

    def device_spec(self, spec):
        """This rank's device (:func:`device_spec`)."""
        return device_spec(self.comm, self.communicator, spec)

    def model(self, model):
        """``model`` with batch normalization over the global minibatch
        (:func:`synchronize_batch_normalization`)."""
        return synchronize_batch_normalization(model, self.comm)

    def optimizer(self, optimizer):
        """``optimizer`` on the gradients averaged over the ranks
        (:func:`data_parallel_optimizer`)."""
        return data_parallel_optimizer(optimizer, self.comm)

    def evaluator(self, evaluator):
        """``evaluator`` reporting the mean over the ranks
        (:func:`data_parallel_evaluator`)."""
        return data_parallel_evaluator(evaluator, self.comm)

    def report_global_minibatch(self, trainer):
        """Adds :class:`MeanOverRanks` before anything reads the loss."""
        extend(trainer, self.comm,
               priority=chainer.training.PRIORITY_WRITER + 2)

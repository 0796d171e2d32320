"""What a training run writes: its output directory (locked, with
``config.json``: :mod:`qnn.training.output_lock`,
:mod:`qnn.training.run_history`), its snapshots, the header it prints before
the report, the report and the plain report stream.

Nothing goes to ``--out`` before every input has been checked:
:func:`check_output_dir` only probes, :func:`make_output_dir` creates, and
:func:`resume_and_run` loads the snapshot to resume from before it opens the
output directory.
"""
import os
import sys
import tempfile

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
from chainer.training import extensions

from qnn.training import multi_node
from qnn.training import options as train_options
from qnn.training import output_lock
from qnn.training import recipes
from qnn.training import run_history
from qnn.training.extensions import snapshots
from qnn.utils.errors import fail
from qnn.utils.errors import warn
import qst


def check_output_dir(path):
    """Fails unless ``path`` is a writable directory or one that can be
    made; creates nothing."""
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        fail('cannot write to the output directory {}: {} is not a '
             'directory'.format(path, probe))
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        fail('cannot write to the output directory {}: {}{}'.format(
            path, e.strerror or e,
            '' if probe == os.path.abspath(path) else ' ({})'.format(probe)))


def make_output_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        fail('cannot write to the output directory {}: {}'.format(
            path, e.strerror or e))


def open_output(args, device, processes, record, resumed_from, iteration):
    """Creates ``args.out``, takes its lock (:mod:`qnn.training.output_lock`)
    and writes ``config.json`` (:mod:`qnn.training.run_history`); returns the
    lock, or fails with one line if another run holds the directory."""
    make_output_dir(args.out)
    lock = output_lock.OutputLock(args.out)
    try:
        lock.acquire()
    except output_lock.OutputBusy as e:
        fail(e)
    try:
        run_history.write_config(args, device, processes, record,
                                 resumed_from, iteration)
    except OSError as e:  # a FIFO or a read-only file in its place
        lock.release()
        fail('cannot write {}: {}'.format(os.path.join(
            args.out, run_history.CONFIG_NAME), e.strerror or e))
    return lock


def print_header(args, device, comm=None):
    """The lines before the report: what is trained, on what, and how."""
    print('Device: {}'.format(device))
    if args.dataset != 'mnist':
        print('# dataset: {}'.format(args.dataset))
    if args.arch == 'cnn':
        print('# network: BinaryConvNet {}'.format(args.cnn_size))
    else:
        print('# unit: {}'.format(args.unit))
    print('# Minibatch-size: {}'.format(args.batchsize))
    if comm is not None:
        print('# processes: {} ({} communicator), global minibatch {}'
              .format(comm.size, args.communicator,
                      comm.size * args.batchsize))
    print('# epoch: {}'.format(args.epoch))
    optimizer = {'adam': 'Adam', 'shift_adamax': 'ShiftAdaMax'}[
        args.optimizer]
    if args.lr_schedule == 'exponential':
        print('# {} alpha: {:g} -> {:g} (exponential decay)'.format(
            optimizer, args.lr, args.lr_final))
    elif args.lr_schedule == 'halving':
        print('# {} alpha: {:g}, halved every {} epochs'.format(
            optimizer, args.lr, args.lr_halving_epochs))
    else:
        print('# {} alpha: {:g} (constant)'.format(optimizer, args.lr))
    print('# seed: {}'.format(args.seed))
    stochastic = ' and '.join(name for name, on in (
        ('weights', args.stochastic_weights),
        ('activations', args.stochastic_activations)) if on)
    print('# bits: weights {}, activations {}, gradients {}, errors {} '
          '({}{})'.format(args.weight_bits, args.activation_bits,
                          args.gradient_bits, args.error_bits, args.quantizer,
                          ', stochastic ' + stochastic if stochastic else ''))
    if args.random_shift or args.random_flip:
        print('# augmentation: {}'.format(', '.join(filter(None, (
            args.random_shift and 'shifts of up to {} pixel{}'.format(
                args.random_shift, 's' if args.random_shift > 1 else ''),
            args.random_flip and 'left-right mirror')))))
    changed = recipe_changes(args)
    if changed:
        print('# recipe: {}{}'.format(args.recipe, ''.join(
            ', {} {}'.format(name, value) for name, value in changed)))
    if args.gradient_bits < qst.FULL_PRECISION and \
            args.gradient_bits <= args.weight_bits:
        warn('--gradient-bits {} is not larger than --weight-bits {}: '
             'training with gradients no finer than the weights is known to '
             'stall or diverge'.format(args.gradient_bits, args.weight_bits))


def recipe_changes(args):
    """``[(option, value)]`` of the recipe options (other than those the
    header shows anyway) that differ from the default recipe."""
    default = recipes.get_recipe('default')
    shown = ('unit', 'epoch', 'batchsize', 'lr', 'lr_final', 'lr_schedule',
             'stochastic_activations', 'stochastic_weights')
    return [(name, getattr(args, name)) for name in sorted(default)
            if name not in shown and getattr(args, name) != default[name]]


class PlainOutput(object):
    """A stream that drops the terminal control code ("clear to end of
    screen") PrintReport writes before each row for the sake of ProgressBar,
    so that a log redirected to a file stays plain text."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        if text != '\033[J':
            self._stream.write(text)

    def flush(self):
        self._stream.flush()


def extend_output(trainer, args, snapshot, interrupts, test_columns):
    """What rank 0 writes and prints: the graph, the snapshots (``snapshot``,
    an :class:`~qnn.training.extensions.snapshots.AtomicSnapshot`, with
    NumPy's random state), the interrupt guard if any, log and report."""
    trainer.extend(extensions.DumpGraph('main/loss'))
    # the iterator's next orders come from NumPy's global generator
    trainer.extend(snapshots.NumpyRandomState())
    trainer.extend(snapshot, name='snapshot',
                   trigger=snapshots.snapshot_trigger(args.frequency,
                                                      args.epoch))
    if interrupts is not None:
        trainer.extend(interrupts, name='interrupts')
    extend_report(trainer, args.plot, test_columns=test_columns)


def resume_and_run(trainer, args, device, snapshot, record, comm=None):
    """Loads ``--resume``'s snapshot into every rank's ``trainer`` (checking
    that it continues ``record``, the run that wrote it), then opens
    ``--out`` and runs the trainer, holding the directory's lock."""
    resumed_from = None
    if args.resume is not None:
        # every rank loads rank 0's snapshot
        with multi_node.all_or_none(comm):
            resumed_from = snapshots.resume(trainer, args.resume, args.out,
                                            snapshot)
            if resumed_from is not None:
                run_history.check_recipe(record, args, resumed_from,
                                         multi_node.size(comm),
                                         train_options.parse_args([]))
    print('')
    lock = None
    with multi_node.all_or_none(comm):
        if multi_node.is_root(comm):
            lock = open_output(args, device, multi_node.size(comm),
                               record if resumed_from else None,
                               resumed_from, trainer.updater.iteration)
    try:
        trainer.run(show_loop_exception_msg=False)
    finally:
        if lock is not None:
            lock.release()


def extend_report(trainer, plot=True, test_columns=False):
    """The log, the plots and the printed report of Chainer's example;
    ``test_columns``: also the test accuracy and the best-validation epoch
    (:mod:`qnn.training.extensions.model_selection`)."""
    trainer.extend(extensions.LogReport(), call_before_training=True)
    if plot and extensions.PlotReport.available():
        trainer.extend(
            extensions.PlotReport(['main/loss', 'validation/main/loss'],
                                  'epoch', file_name='loss.png',
                                  postprocess=_log_scale),
            call_before_training=True)
        trainer.extend(
            extensions.PlotReport(
                ['main/accuracy', 'validation/main/accuracy'],
                'epoch', file_name='accuracy.png'),
            call_before_training=True)
    columns = ['epoch', 'main/loss', 'validation/main/loss',
               'main/accuracy', 'validation/main/accuracy']
    if test_columns:
        columns += ['test/main/accuracy', 'best/epoch']
    interactive = sys.stdout.isatty()
    trainer.extend(extensions.PrintReport(
        columns + ['elapsed_time'],
        out=sys.stdout if interactive else PlainOutput(sys.stdout)),
        call_before_training=True)
    if interactive:
        trainer.extend(extensions.ProgressBar())


def _log_scale(figure, axes, summary):
    # the loss before training (epoch 0) is some 100x that after epoch 1
    axes.set_yscale('log')

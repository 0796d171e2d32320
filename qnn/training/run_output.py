"""What a training run writes: its output directory (one run's, locked,
with ``config.json``: :mod:`qnn.training.output_lock`,
:mod:`qnn.training.run_history`), the header it prints before the report,
the report's columns and its plain stream.

Nothing goes to ``--out`` before every input has been checked:
:func:`check_output_dir` only probes, and :func:`opened` loads the
snapshot to resume from before it creates the directory. A directory that
holds another run's files is refused (their snapshots would mix, and a
surviving one would no longer match ``config.json``) unless
``--replace-out`` deletes them.
"""
import contextlib
import os
import sys
import tempfile

from qnn.training import options as train_options
from qnn.training import output_lock
from qnn.training import recipes
from qnn.training import run_history
from qnn.training.extensions import snapshots
from qnn.training.extensions import step_size_schedule
from qnn.utils import atomic_files
from qnn.utils.errors import fail
from qnn.utils.errors import warn
import qst



def check_output_dir(args):
    """Fails unless ``args.out`` is a writable directory or one that can be
    made, and holds no other run's files (unless ``--replace-out``);
    creates nothing."""
    path = args.out
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
    found = other_run_files(args)
    if found and not args.replace_out:
        fail('the output directory {} holds the files of another run ({}{}): '
             'continue that run with --resume auto, choose another --out, or '
             'pass --replace-out to delete them first'.format(
                 path, ', '.join(found[:3]), ', ...' if len(found) > 3
                 else ''))


def other_run_files(args):
    """The names of the files in ``args.out`` that another run wrote: all
    the run files there, unless this run resumes the snapshot of that
    directory (``--resume auto``, or a snapshot in it)."""
    if not os.path.isdir(args.out):
        return []
    if args.resume == 'auto' or args.resume is not None and \
            os.path.samefile(os.path.dirname(os.path.abspath(args.resume)),
                             args.out):
        return []
    return sorted(name for name in os.listdir(args.out)
                  if atomic_files.RUN_FILE.match(name) and
                  not name.startswith(output_lock.LOCK_NAME))


def make_output_dir(args):
    """Creates ``args.out``; with ``--replace-out``, deletes the other run's
    files in it first (:func:`other_run_files`)."""
    try:
        os.makedirs(args.out, exist_ok=True)
        if args.replace_out:
            for name in other_run_files(args):
                os.remove(os.path.join(args.out, name))
    except OSError as e:
        fail('cannot write to the output directory {}: {}'.format(
            args.out, e.strerror or e))


@contextlib.contextmanager
def opened(trainer, args, device, snapshot, record, processes):
    """Loads ``--resume``'s snapshot into every rank's ``trainer``
    (checking that it continues ``record``, the run that wrote it), then,
    on rank 0, creates ``--out``, takes its lock
    (:mod:`qnn.training.output_lock`) and writes ``config.json``
    (:mod:`qnn.training.run_history`) for the block, the run; fails with
    one line if another process holds the directory."""
    resumed_from = None
    if args.resume is not None:
        # every rank loads rank 0's snapshot
        with processes.all_or_none():
            resumed_from = snapshots.resume(trainer, args.resume, args.out,
                                            snapshot)
            if resumed_from is not None:
                run_history.check_recipe(record, args, resumed_from,
                                         processes.size,
                                         train_options.parse_args([]))
    print('')
    lock = None
    with processes.all_or_none():
        if processes.is_root:
            lock = open_output(args, device, processes.size,
                               record if resumed_from else None,
                               resumed_from, trainer.updater.iteration)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def open_output(args, device, processes, record, resumed_from, iteration):
    """Creates ``args.out``, takes its lock (:mod:`qnn.training.output_lock`)
    and writes ``config.json`` (:mod:`qnn.training.run_history`); returns the
    lock, or fails with one line if another run holds the directory or
    ``config.json`` cannot be written."""
    make_output_dir(args)
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


def print_header(args, device, processes=1):
    """The lines before the report: what is trained, on what (``processes``
    of them), and how."""
    print('Device: {}'.format(device))
    if args.dataset != 'mnist':
        print('# dataset: {}'.format(args.dataset))
    if args.arch == 'cnn':
        print('# network: BinaryConvNet {}'.format(args.cnn_size))
    elif args.arch == 'wage':
        print('# network: WageLeNet5 {}'.format(args.wage_net))
    else:
        print('# unit: {}'.format(args.unit))
    print('# Minibatch-size: {}'.format(args.batchsize))
    if processes > 1:
        print('# processes: {} ({} communicator), global minibatch {}'
              .format(processes, args.communicator,
                      processes * args.batchsize))
    print('# epoch: {}'.format(args.epoch))
    optimizer = {'adam': 'Adam', 'shift_adamax': 'ShiftAdaMax',
                 'wage_sgd': 'WageSGD'}[args.optimizer]
    if args.lr_schedule == 'exponential':
        print('# {} alpha: {:g} -> {:g} (exponential decay)'.format(
            optimizer, args.lr, args.lr_final))
    elif args.lr_schedule == 'steps':
        print('# {} alpha: {:g}, then {}'.format(
            optimizer, args.lr, ', '.join('{:g} after epoch {}'.format(lr, e)
                                         for e, lr in step_size_schedule.
                                         parse_lr_steps(args.lr_steps))))
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
          '({}{}{})'.format(args.weight_bits, args.activation_bits,
                            args.gradient_bits, args.error_bits,
                            args.quantizer,
                            ', stochastic ' + stochastic if stochastic else '',
                            ', randomizer {}'.format(args.randomizer_bits)
                            if args.optimizer == 'wage_sgd' else ''))
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


def report_columns(test_columns=False):
    """The printed report's columns: Chainer's example's, with
    ``test_columns`` the test accuracy and the best-validation epoch too
    (:mod:`qnn.training.extensions.model_selection`)."""
    columns = ['epoch', 'main/loss', 'validation/main/loss',
               'main/accuracy', 'validation/main/accuracy']
    if test_columns:
        columns += ['test/main/accuracy', 'best/epoch']
    return columns + ['elapsed_time']


def report_stream():
    """Standard output for PrintReport, without its terminal control code
    when it is not a terminal (:class:`PlainOutput`)."""
    return sys.stdout if sys.stdout.isatty() else PlainOutput(sys.stdout)


def log_scale(figure, axes, summary):
    """PlotReport's postprocess for the loss: the loss before training
    (epoch 0) is some 100x that after epoch 1."""
    axes.set_yscale('log')

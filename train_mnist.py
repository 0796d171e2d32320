#!/usr/bin/env python
"""Train a binarized MLP on MNIST (Hubara et al. 2016) with Chainer.

Mirrors Chainer's examples/mnist/train_mnist.py: the same options and the
same Trainer report, with the network of :class:`net.MnistMLP`, Adam with an
exponentially decaying step size, and :class:`weight_clip.WeightClip`.
"""
import argparse
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import warnings

# OpenBLAS's idle threads spin for about 2^28 cycles after each matrix
# product before they sleep; between the products of a training step that
# spinning took one core from the elementwise work (and showed as system
# time, half of all CPU time). 2^4 cycles: they yield the core at once.
# Read when NumPy loads OpenBLAS, hence before `import numpy`.
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')
import numpy  # NOQA: E402

# CuPy, imported by Chainer, warns at length when NCCL (multi-GPU only) is
# missing; a single-device run does not need it.
warnings.filterwarnings('ignore', r'\s*nccl library could not be loaded',
                        UserWarning)
import chainer_compat  # NOQA: F401  (first: Chainer on NumPy 2)
import chainer  # NOQA: E402
import chainer.links as L
from chainer import training
from chainer.training import extensions

import cpu_threads
import mnist_data
import multi_node
import net
import qst
import run_guards
import snapshots
from inplace_adam import InplaceAdam
from weight_clip import WeightClip

# Exit statuses: 0 done; 1 the environment, data, output directory or
# snapshot is unusable; 2 bad arguments (argparse); 3 training diverged;
# 128 + signal number when stopped by a signal (130 SIGINT, 143 SIGTERM).
EXIT_ERROR = 1
EXIT_DIVERGED = 3
EXIT_STATUS_HELP = '''exit status:
  0    finished
  1    unusable environment, data, output directory or --resume snapshot
  2    bad argument
  3    training diverged (NaN or infinite loss or parameter); the last
       good snapshot is left as it was
  130  stopped by SIGINT (Ctrl-C), 143 by SIGTERM, after writing a snapshot
       (at once, without one, on a second Ctrl-C)'''


def stop(message, status):
    """Ends the program with one line on stderr instead of a traceback."""
    sys.stdout.flush()
    sys.stderr.write('train_mnist.py: {}\n'.format(message))
    raise SystemExit(status)


def fail(message, status=EXIT_ERROR):
    """Ends the program with ``train_mnist.py: error: message``."""
    stop('error: {}'.format(message), status)


def _integer(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            '{!r} is not an integer'.format(text))


def _positive_int(text):
    value = _integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(
            'must be a positive integer, got {}'.format(value))
    return value


def _seed(text):
    value = _integer(text)
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(
            'must be between 0 and 2**32 - 1, got {}'.format(value))
    return value


def _frequency(text):
    return -1 if _integer(text) == -1 else _positive_int(text)


def _resume(text):
    if text != 'auto' and not os.path.isfile(text):
        raise argparse.ArgumentTypeError(
            'no such file: {}'.format(text) if not os.path.exists(text)
            else 'not a file: {}'.format(text))
    return text


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError('{!r} is not a number'.format(text))
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(
            'must be a positive number, got {}'.format(text))
    return value


def _bits(text, low=1):
    value = _integer(text)
    if not low <= value <= qst.FULL_PRECISION:
        raise argparse.ArgumentTypeError(
            'must be between {} and {} bits ({} means full precision), got '
            '{}'.format(low, qst.FULL_PRECISION, qst.FULL_PRECISION, value))
    return value


def _gradient_bits(text):
    # a sign bit and at least one magnitude bit
    return _bits(text, low=2)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                     argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the epilog's table as written."""

    def _get_help_string(self, action):
        if action.nargs == 0:  # a flag: "(default: True)" would mislead
            return action.help
        return super(_HelpFormatter, self)._get_help_string(action)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Binarized neural network (Hubara et al. 2016): '
                    'MNIST MLP in Chainer',
        epilog=EXIT_STATUS_HELP,
        formatter_class=_HelpFormatter)
    parser.add_argument('--batchsize', '-b', type=_positive_int, default=100,
                        help='Number of images in each mini-batch')
    parser.add_argument('--epoch', '-e', type=_positive_int, default=20,
                        help='Number of sweeps over the dataset to train')
    parser.add_argument('--frequency', '-f', type=_frequency, default=1,
                        help='Frequency of taking a snapshot, in epochs '
                             '(-1: only at the end); the last epoch always '
                             'gets one')
    parser.add_argument('--device', '-d', type=str, default='-1',
                        help='Device specifier: -1 or @numpy (CPU), '
                             '0 or @cupy:0 (GPU 0), native:0 (ChainerX)')
    parser.add_argument('--out', '-o', default='result',
                        help='Directory to output the result')
    parser.add_argument('--resume', '-r', type=_resume, metavar='SNAPSHOT',
                        help='Resume the training from a snapshot file, or '
                             '"auto": from the newest complete snapshot in '
                             '--out (starting afresh if there is none)')
    parser.add_argument('--unit', '-u', type=_positive_int, default=1000,
                        help='Number of units in each hidden layer')
    parser.add_argument('--noplot', dest='plot', action='store_false',
                        help='Disable PlotReport extension')
    parser.add_argument('--seed', type=_seed, default=0,
                        help='Random seed (weights and minibatch order)')
    parser.add_argument('--data-dir', default=None,
                        help='Directory with the four MNIST IDX files '
                             '(default: the copy in data/mnist)')
    parser.add_argument('--lr', type=_positive_float, default=1e-3,
                        help='Adam step size (alpha) of the first epoch')
    parser.add_argument('--lr-final', type=_positive_float, default=1e-5,
                        help='Step size of the last epoch when '
                             '--lr-schedule=exponential')
    parser.add_argument('--lr-schedule', choices=('exponential', 'constant'),
                        default='exponential',
                        help='exponential: multiply the step size by a fixed '
                             'factor after every epoch, from --lr to '
                             '--lr-final (the paper decays it '
                             'exponentially); constant: keep --lr (plain Adam)')
    parser.add_argument('--eval-batchsize', type=_positive_int, default=1000,
                        metavar='N',
                        help='Images per evaluation batch (evaluation uses '
                             'the running BN statistics, so this changes '
                             'only the speed)')
    parser.add_argument('--train-subset', type=_positive_int, default=None,
                        metavar='N',
                        help='Train on the first N training images only '
                             '(quick runs)')
    parser.add_argument('--test-subset', type=_positive_int, default=None,
                        metavar='N',
                        help='Validate on the first N test images only')
    parser.add_argument('--snapshot-keep', type=_positive_int, default=3,
                        metavar='N',
                        help='Keep the N newest snapshots in --out')
    parser.add_argument('--no-divergence-check', dest='divergence_check',
                        action='store_false',
                        help='Train on when the loss or a parameter becomes '
                             'NaN or infinite (by default the run stops '
                             'with exit status 3)')
    parser.add_argument('--communicator', choices=multi_node.COMMUNICATORS,
                        default=None,
                        help='Train data-parallel over the processes of '
                             '`mpiexec -n N` with this ChainerMN communicator '
                             '(naive: CPU; flat, pure_nccl: one GPU per '
                             'process); --batchsize is then per process')
    group = parser.add_argument_group(
        'quantization', 'bit widths: 1 is binarization (sign), 32 is full '
        'precision (no rounding; activations still clipped to [-1, 1])')
    group.add_argument('--weight-bits', type=_bits, default=1, metavar='K',
                       help='Bit width of the weights')
    group.add_argument('--activation-bits', type=_bits, default=1,
                       metavar='K', help='Bit width of the hidden activations')
    group.add_argument('--quantizer', choices=qst.QUANTIZERS,
                       default='linear',
                       help='linear: 2^K evenly spaced levels in [-1, 1]; '
                            'log: sign and power of two (LogQuant)')
    group.add_argument('--stochastic', action='store_true',
                       help='Stochastic rounding of weights and activations '
                            'while training (deterministic at evaluation)')
    group.add_argument('--gradient-bits', type=_gradient_bits, default=32,
                       metavar='K',
                       help='Bit width of the weight gradients (the paper '
                            'uses 6), stochastic rounding on a power-of-two '
                            'scale')
    group.add_argument('--error-bits', type=_gradient_bits, default=32,
                       metavar='K',
                       help='Bit width of the errors propagated between '
                            'layers')
    group = parser.add_argument_group('deprecated arguments')
    group.add_argument('--gpu', '-g', dest='device', type=int, nargs='?',
                       const=0, help='GPU ID (negative value indicates CPU)')
    args = parser.parse_args(argv)
    args.device = str(args.device)
    if args.communicator in multi_node.GPU_COMMUNICATORS and \
            args.device != '-1':
        parser.error('--communicator {} gives each process the GPU of its '
                     'local rank; leave out --device/--gpu'.format(
                         args.communicator))
    return args


def get_device(spec):
    """Returns the Chainer device for ``spec``, or fails with one line
    saying what is missing."""
    try:
        device = chainer.get_device(
            int(spec) if spec.lstrip('-').isdigit() else spec)
    except Exception as e:  # Chainer raises several types here
        wants_cuda = spec.lstrip('-').isdigit() or spec.startswith(
            ('@cupy', 'cuda'))
        if wants_cuda and not chainer.backends.cuda.available:
            fail('device {} needs CUDA through CuPy, which is not available '
                 '({})'.format(spec, _cuda_problem()))
        if spec.startswith(('native', 'cuda')) and \
                not chainer.backend.chainerx.is_available():
            fail('device {} needs ChainerX, which this Chainer was built '
                 'without (set CHAINER_BUILD_CHAINERX=1 when installing '
                 'chainer)'.format(spec))
        fail('invalid device specifier {!r} ({}); use -1 or @numpy, 0 or '
             '@cupy:0, native:0'.format(spec, e))
    try:
        device.use()
        if device.xp is chainer.backends.cuda.cupy:
            chainer.backends.cuda.cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        fail('device {} cannot be used: {}'.format(spec, e))
    return device


def _cuda_problem():
    """Says why Chainer could not load CuPy and what to install."""
    error = getattr(chainer.backends.cuda, '_resolution_error', None)
    if error is None or isinstance(error, ImportError) and \
            getattr(error, 'name', None) == 'cupy':
        return ('cupy is not installed: run `make gpu` or pip install -r '
                'requirements-gpu.txt, on a machine with an NVIDIA driver and '
                'the CUDA 12 libraries')
    return ('CuPy is installed but cannot load CUDA: {}: {}; install a CUDA '
            '12.x toolkit (or put the lib directories of NVIDIA\'s CUDA 12 '
            'wheels on LD_LIBRARY_PATH) and an NVIDIA driver'.format(
                type(error).__name__, error))


class _PlainOutput(object):
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


def _log_scale(figure, axes, summary):
    # the loss before training (epoch 0) is some 100x that after epoch 1
    axes.set_yscale('log')


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


def snapshot_trigger(frequency, last_epoch):
    """Fires at the end of every ``frequency``-th epoch (never if -1) and
    of epoch ``last_epoch``."""
    def due(trainer):
        updater = trainer.updater
        return updater.is_new_epoch and (
            frequency != -1 and updater.epoch % frequency == 0 or
            updater.epoch >= last_epoch)
    return due


def resume(trainer, args, snapshot):
    """Loads the snapshot ``--resume`` names, or fails with one line."""
    path = args.resume
    if path == 'auto':
        try:
            path, skipped = snapshots.newest_valid_snapshot(args.out, trainer)
        except snapshots.SnapshotError as e:
            fail('cannot resume from {}: {}'.format(e.path, e))
        for damaged, reason in skipped:
            sys.stderr.write('train_mnist.py: skipping {}: {}\n'.format(
                damaged, reason))
        if path is None:
            print('# resume: no snapshot in {}, starting from the '
                  'beginning'.format(args.out))
            return
    try:
        snapshots.load_snapshot(path, trainer)
    except snapshots.SnapshotError as e:
        fail('cannot resume from {}: {}'.format(path, e))
    snapshot.last_path = path
    print('# resume: {} (iteration {}, epoch {})'.format(
        path, trainer.updater.iteration, trainer.updater.epoch))


def build_model(args):
    """The classifier that main() trains (bench/speed.py times the same)."""
    return L.Classifier(net.MnistMLP(
        784, args.unit, 10, weight_bits=args.weight_bits,
        activation_bits=args.activation_bits, quantizer=args.quantizer,
        stochastic=args.stochastic, gradient_bits=args.gradient_bits,
        error_bits=args.error_bits))


def build_optimizer(args, model, comm=None):
    """Adam (Chainer's arithmetic, updated in place) with the weights
    clipped to [-1, 1] after every update; with a ChainerMN communicator
    ``comm``, on the gradients averaged over the ranks."""
    optimizer = multi_node.data_parallel_optimizer(
        InplaceAdam(alpha=args.lr), comm)
    optimizer.setup(model)
    optimizer.add_hook(WeightClip(-1.0, 1.0))
    return optimizer


def write_config(args, device):
    """Writes the options of this run, and the versions that ran it, to
    config.json next to LogReport's log, so that every result says which
    bits produced it."""
    config = dict(vars(args))
    config['device'] = str(device)
    config['versions'] = {
        'python': platform.python_version(), 'chainer': chainer.__version__,
        'numpy': numpy.__version__}
    if device.xp is chainer.backends.cuda.cupy:
        config['versions']['cupy'] = device.xp.__version__
    path = os.path.join(args.out, 'config.json')
    with tempfile.NamedTemporaryFile(
            'w', dir=args.out, prefix='.config.json.', delete=False) as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write('\n')
    os.replace(f.name, path)


def connect(args):
    """The ChainerMN communicator of ``--communicator`` (``None`` for a
    single process), or one line saying what is missing."""
    if args.communicator is None:
        if multi_node.launched_size() > 1:
            fail('started by mpiexec as one of {} processes without '
                 '--communicator: each would train alone on the same output '
                 'directory; add --communicator naive'.format(
                     multi_node.launched_size()))
        return None
    try:
        comm = multi_node.create_communicator(args.communicator)
    except multi_node.MultiNodeError as e:
        fail(e)
    multi_node.silence_non_root(comm)
    multi_node.exit_on_signals(comm)
    # the ranks on a machine share its cores
    cpu_threads.set_threads((os.cpu_count() or 1) // comm.intra_size)
    return comm


def main(argv=None):
    args = parse_args(argv)
    comm = connect(args)
    snapshot = snapshots.AtomicSnapshot(keep=args.snapshot_keep)
    # under mpiexec signals end every rank at once (multi_node.exit_on_signals)
    interrupts = run_guards.InterruptGuard(snapshot) if comm is None \
        else None
    try:
        with interrupts or contextlib.nullcontext(), \
                warnings.catch_warnings():
            if args.divergence_check:
                # the guard reports a NaN or infinity in one sentence
                warnings.filterwarnings(
                    'ignore', r'(overflow|invalid value|divide by zero) '
                    r'encountered', RuntimeWarning)
            run_training(args, snapshot, interrupts, comm)
    except run_guards.DivergenceError as e:
        # every rank sees the same mean loss and the same parameters, so all
        # stop at the same iteration; rank 0 says so
        if not multi_node.is_root(comm):
            raise SystemExit(EXIT_DIVERGED)
        fail('{}; stopped without saving anything of it; {} (a lower --lr '
             'may help)'.format(e, 'the last good snapshot is {}'.format(
                 snapshot.last_path) if snapshot.last_path else
                 'there is no snapshot of this run'), EXIT_DIVERGED)
    except run_guards.Interrupted as e:
        stop(_interrupted_message(e, snapshot), e.status)
    return 0


def _interrupted_message(e, snapshot):
    if e.at_once and e.iteration is None:
        return 'interrupted by {} before training started; nothing was ' \
            'written'.format(e.signal_name)
    if e.at_once:
        where = 'interrupted again by {}: stopped at once at iteration {}, ' \
            'without a snapshot of it'.format(e.signal_name, e.iteration)
    else:
        where = 'interrupted by {} at iteration {} (epoch {:.2f}): wrote ' \
            '{}'.format(e.signal_name, e.iteration, e.epoch_detail,
                        e.snapshot)
    if snapshot.last_path is None:
        return where + '; there is no snapshot to resume from'
    return '{}; to continue, run the same command with --resume {} (or ' \
        '--resume auto)'.format(where, snapshot.last_path)


def run_training(args, snapshot, interrupts, comm=None):
    """Sets up and runs the trainer; returns when training has finished."""
    # a rank that fails here ends every rank, with one line from rank 0
    with multi_node.all_or_none(comm):
        device = get_device(multi_node.device_spec(comm, args.communicator,
                                                   args.device))
        if multi_node.is_root(comm):
            check_output_dir(args.out)

    print('Device: {}'.format(device))
    print('# unit: {}'.format(args.unit))
    print('# Minibatch-size: {}'.format(args.batchsize))
    if comm is not None:
        print('# processes: {} ({} communicator), global minibatch {}'
              .format(comm.size, args.communicator,
                      comm.size * args.batchsize))
    print('# epoch: {}'.format(args.epoch))
    if args.lr_schedule == 'exponential':
        print('# Adam alpha: {:g} -> {:g} (exponential decay)'.format(
            args.lr, args.lr_final))
    else:
        print('# Adam alpha: {:g} (constant)'.format(args.lr))
    print('# seed: {}'.format(args.seed))
    print('# bits: weights {}, activations {}, gradients {}, errors {} '
          '({}{})'.format(args.weight_bits, args.activation_bits,
                          args.gradient_bits, args.error_bits, args.quantizer,
                          ', stochastic' if args.stochastic else ''))
    if args.gradient_bits < qst.FULL_PRECISION and \
            args.gradient_bits <= args.weight_bits:
        sys.stdout.flush()
        sys.stderr.write(
            'train_mnist.py: warning: --gradient-bits {} is not larger than '
            '--weight-bits {}: training with gradients no finer than the '
            'weights is known to stall or diverge\n'.format(
                args.gradient_bits, args.weight_bits))

    numpy.random.seed(args.seed)
    if device.xp is chainer.backends.cuda.cupy:
        device.xp.random.seed(args.seed)

    # rank 0 alone reads the data, then gives each rank its part
    train = test = None
    with multi_node.all_or_none(comm):
        if multi_node.is_root(comm):
            try:
                train, test = mnist_data.get_mnist(data_dir=args.data_dir)
            except mnist_data.MnistDataError as e:
                fail(e)
            if args.train_subset is not None:
                train = train[:args.train_subset]
            if args.test_subset is not None:
                test = test[:args.test_subset]
    train = multi_node.scatter(train, comm, shuffle=True, seed=args.seed)
    test = multi_node.scatter(test, comm)

    model = multi_node.synchronize_batch_normalization(build_model(args),
                                                       comm)
    model.to_device(device)
    optimizer = build_optimizer(args, model, comm)

    train_iter = chainer.iterators.SerialIterator(train, args.batchsize)
    test_iter = chainer.iterators.SerialIterator(
        test, args.eval_batchsize, repeat=False, shuffle=False)

    updater = training.updaters.StandardUpdater(
        train_iter, optimizer, device=device)
    trainer = training.Trainer(updater, (args.epoch, 'epoch'), out=args.out)

    # the loss and accuracy of the global minibatch, before anything reads
    # them (the divergence guard included)
    multi_node.extend(trainer, comm, priority=training.PRIORITY_WRITER + 2)
    if args.divergence_check:
        trainer.extend(run_guards.DivergenceGuard())
    if args.lr_schedule == 'exponential':
        # alpha of epoch e (1-based) is lr * rate**(e - 1)
        rate = (args.lr_final / args.lr) ** (1.0 / max(1, args.epoch - 1))
        trainer.extend(extensions.ExponentialShift('alpha', rate,
                                                   init=args.lr),
                       trigger=(1, 'epoch'))
    # the step size of each epoch goes into the log (not the printed table)
    trainer.extend(extensions.observe_value(
        'alpha', lambda trainer: trainer.updater.get_optimizer('main').alpha))
    trainer.extend(multi_node.data_parallel_evaluator(
        extensions.Evaluator(test_iter, model, device=device), comm),
        call_before_training=True)
    if multi_node.is_root(comm):  # the files and the printed report
        trainer.extend(extensions.DumpGraph('main/loss'))
        # the iterator's next orders come from NumPy's global generator
        trainer.extend(snapshots.NumpyRandomState())
        trainer.extend(snapshot, name='snapshot',
                       trigger=snapshot_trigger(args.frequency, args.epoch))
        if interrupts is not None:
            trainer.extend(interrupts, name='interrupts')
        trainer.extend(extensions.LogReport(), call_before_training=True)
        if args.plot and extensions.PlotReport.available():
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
        interactive = sys.stdout.isatty()
        trainer.extend(extensions.PrintReport(
            ['epoch', 'main/loss', 'validation/main/loss',
             'main/accuracy', 'validation/main/accuracy', 'elapsed_time'],
            out=sys.stdout if interactive else _PlainOutput(sys.stdout)),
            call_before_training=True)
        if interactive:
            trainer.extend(extensions.ProgressBar())

    if args.resume is not None:
        # every rank loads rank 0's snapshot
        with multi_node.all_or_none(comm):
            resume(trainer, args, snapshot)
    print('')

    # only now, with every input checked, does anything go to --out
    with multi_node.all_or_none(comm):
        if multi_node.is_root(comm):
            try:
                os.makedirs(args.out, exist_ok=True)
            except OSError as e:
                fail('cannot write to the output directory {}: {}'.format(
                    args.out, e.strerror or e))
            write_config(args, device)
    trainer.run(show_loop_exception_msg=False)


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/env python
"""Train a binarized MLP on MNIST (Hubara et al. 2016) with Chainer.

Mirrors Chainer's examples/mnist/train_mnist.py: the same options and the
same Trainer report, with the network of :class:`net.MnistMLP`, Adam with an
exponentially decaying step size, and :class:`weight_clip.WeightClip`.
"""
import argparse
import math
import os
import sys
import tempfile
import warnings

import numpy

# CuPy, imported by Chainer, warns at length when NCCL (multi-GPU only) is
# missing; a single-device run does not need it.
warnings.filterwarnings('ignore', r'\s*nccl library could not be loaded',
                        UserWarning)
import chainer  # NOQA: E402
import chainer.links as L
from chainer import training
from chainer.training import extensions

import mnist_data
import multi_node
import net
from weight_clip import WeightClip

# Exit statuses: 0 done; 1 the environment, data, output directory or
# snapshot is unusable; 2 bad arguments (argparse); 3 training diverged.
EXIT_ERROR = 1
EXIT_DIVERGED = 3


def fail(message, status=EXIT_ERROR):
    """Ends the program with one line on stderr instead of a traceback."""
    sys.stdout.flush()
    sys.stderr.write('train_mnist.py: error: {}\n'.format(message))
    raise SystemExit(status)


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


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError('{!r} is not a number'.format(text))
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(
            'must be a positive number, got {}'.format(text))
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Binarized neural network (Hubara et al. 2016): '
                    'MNIST MLP in Chainer',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--batchsize', '-b', type=_positive_int, default=100,
                        help='Number of images in each mini-batch')
    parser.add_argument('--epoch', '-e', type=_positive_int, default=20,
                        help='Number of sweeps over the dataset to train')
    parser.add_argument('--frequency', '-f', type=_frequency, default=-1,
                        help='Frequency of taking a snapshot, in epochs '
                             '(-1: only at the end)')
    parser.add_argument('--device', '-d', type=str, default='-1',
                        help='Device specifier: -1 or @numpy (CPU), '
                             '0 or @cupy:0 (GPU 0), native:0 (ChainerX)')
    parser.add_argument('--out', '-o', default='result',
                        help='Directory to output the result')
    parser.add_argument('--resume', '-r', type=str,
                        help='Resume the training from snapshot')
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
    parser.add_argument('--train-subset', type=_positive_int, default=None,
                        metavar='N',
                        help='Train on the first N training images only '
                             '(quick runs)')
    parser.add_argument('--test-subset', type=_positive_int, default=None,
                        metavar='N',
                        help='Validate on the first N test images only')
    parser.add_argument('--communicator', choices=multi_node.COMMUNICATORS,
                        default=None,
                        help='Train data-parallel over the processes of '
                             '`mpiexec -n N` with this ChainerMN communicator '
                             '(naive: CPU; flat, pure_nccl: one GPU per '
                             'process); --batchsize is then per process')
    group = parser.add_argument_group('deprecated arguments')
    group.add_argument('--gpu', '-g', dest='device', type=int, nargs='?',
                       const=0, help='GPU ID (negative value indicates CPU)')
    args = parser.parse_args(argv)
    if args.resume is not None and not os.path.isfile(args.resume):
        parser.error('--resume: no such file: {}'.format(args.resume))
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


class DivergenceError(RuntimeError):
    pass


def check_finite_loss(trainer):
    """Stops training as soon as the training loss is NaN or infinite."""
    loss = trainer.observation.get('main/loss')
    if loss is not None and not math.isfinite(float(loss.array)):
        updater = trainer.updater
        # epoch_detail is 1.0 at the last iteration of epoch 1
        epoch = max(1, int(math.ceil(updater.epoch_detail)))
        raise DivergenceError(
            'training diverged: main/loss is {} at epoch {}, iteration {}; '
            'stopped (a lower --lr may help)'.format(
                float(loss.array), epoch, updater.iteration))


def main(argv=None):
    args = parse_args(argv)
    comm = None
    if args.communicator is not None:
        try:
            comm = multi_node.create_communicator(args.communicator)
        except multi_node.MultiNodeError as e:
            fail(e)
    elif multi_node.launched_size() > 1:
        fail('started by mpiexec as one of {} processes without '
             '--communicator: each would train alone on the same output '
             'directory; add --communicator naive'.format(
                 multi_node.launched_size()))
    multi_node.silence_non_root(comm)
    with multi_node.all_or_none(comm):
        device = get_device(multi_node.device_spec(comm, args.communicator,
                                                   args.device))

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
    print('')

    numpy.random.seed(args.seed)
    if device.xp is chainer.backends.cuda.cupy:
        device.xp.random.seed(args.seed)

    # rank 0 alone writes the output and reads the data, then scatters it
    train = test = None
    with multi_node.all_or_none(comm):
        if multi_node.is_root(comm):
            try:
                os.makedirs(args.out, exist_ok=True)
                with tempfile.TemporaryFile(dir=args.out):
                    pass
            except OSError as e:
                fail('cannot write to the output directory {}: {}'.format(
                    args.out, e.strerror or e))

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

    model = L.Classifier(net.MnistMLP(784, args.unit, 10))
    model = multi_node.synchronize_batch_normalization(model, comm)
    model.to_device(device)

    optimizer = multi_node.data_parallel_optimizer(
        chainer.optimizers.Adam(alpha=args.lr), comm)
    optimizer.setup(model)
    optimizer.add_hook(WeightClip(-1.0, 1.0))

    train_iter = chainer.iterators.SerialIterator(train, args.batchsize)
    test_iter = chainer.iterators.SerialIterator(
        test, args.batchsize, repeat=False, shuffle=False)

    updater = training.updaters.StandardUpdater(
        train_iter, optimizer, device=device)
    trainer = training.Trainer(updater, (args.epoch, 'epoch'), out=args.out)

    trainer.extend(check_finite_loss, trigger=(1, 'iteration'),
                   priority=training.PRIORITY_WRITER + 1)
    multi_node.extend(trainer, comm, priority=training.PRIORITY_WRITER + 2)
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
        frequency = args.epoch if args.frequency == -1 else args.frequency
        trainer.extend(extensions.snapshot(n_retains=1),
                       trigger=(frequency, 'epoch'))
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
        try:
            chainer.serializers.load_npz(args.resume, trainer)
        except Exception as e:  # numpy and zipfile raise many types
            fail('cannot resume from {} ({}: {}); is it a snapshot of this '
                 'script with the same --unit?'.format(
                     args.resume, type(e).__name__, e))

    try:
        trainer.run(show_loop_exception_msg=False)
    except DivergenceError as e:
        # all ranks see the same mean loss and stop at the same iteration
        if not multi_node.is_root(comm):
            raise SystemExit(EXIT_DIVERGED)
        fail(e, EXIT_DIVERGED)
    return 0


if __name__ == '__main__':
    sys.exit(main())

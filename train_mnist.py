#!/usr/bin/env python
"""Train a binarized network on MNIST (Hubara et al. 2016) with Chainer.

Mirrors Chainer's examples/mnist/train_mnist.py, read top to bottom:
arguments, data, model, optimizer, trainer, its extensions in Chainer's
order, run. The network is :class:`net.MnistMLP` or
:class:`net.BinaryConvNet`, the optimizer Adam with an exponentially
decaying step size and :class:`weight_clip.WeightClip`; option checks,
devices, one-line errors and the output directory live in the package
``qnn`` (docs/layout.md). Under ``mpiexec`` with ``--communicator``, the
few calls on ``processes`` spread the work over the ranks; for one process
they return what they are given.
"""
import os
import sys
import warnings

from qnn.utils import environment_check
environment_check.require('train_mnist.py')
# OpenBLAS's idle threads spin for about 2^28 cycles after each product
# before they sleep, taking a core from the step's elementwise work; with
# 2^4 they yield at once. Read when NumPy loads OpenBLAS.
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')
import numpy  # NOQA: E402

# CuPy, imported by Chainer, warns at length when NCCL (multi-GPU only) is
# missing; a single-device run does not need it.
warnings.filterwarnings('ignore', r'\s*nccl library could not be loaded',
                        UserWarning)
from qnn.backends import chainer_compat  # NOQA: E402,F401  (before chainer)
import chainer  # NOQA: E402
from chainer import training
from chainer.training import extensions

import net
from qnn import datasets
from qnn.backends import allocator
from qnn.backends import devices
from qnn.iterators.array_iterator import ArrayIterator
from qnn.iterators.array_iterator import concat_batch
from qnn.iterators.augmentation import RandomShiftFlip
from qnn.optimizers import step_sizes
from qnn.training import choices
from qnn.training import multi_node
from qnn.training import options as train_options
from qnn.training import run_history
from qnn.training import run_output
from qnn.training.extensions import model_selection
from qnn.training.extensions import population_statistics
from qnn.training.extensions import run_guards
from qnn.training.extensions import snapshots
from qnn.training.extensions.step_size_schedule import step_size_schedule
from qnn.training.splits import load_splits
from qnn.utils import errors
import qst
from weight_clip import WeightClip


def build_model(args):
    """The classifier that main() trains (bench/speed.py times the same)."""
    info = datasets.get_info(args.dataset)
    quantization = qst.Quantization.of(args)
    if args.arch == 'wage':
        predictor = net.WageLeNet5(info.n_classes, args.wage_net,
                                   info.shape, quantization)
    elif args.arch == 'cnn':
        predictor = net.BinaryConvNet(
            info.n_classes, args.cnn_size, in_shape=info.shape,
            quantization=quantization, weight_init=args.weight_init)
    else:
        predictor = net.MnistMLP(
            info.in_size, args.unit, info.n_classes, quantization,
            n_layers=args.layers, input_dropout=args.input_dropout,
            hidden_dropout=args.hidden_dropout, bn=args.bn,
            bn_eps=args.bn_eps, bn_decay=args.bn_decay,
            weight_init=args.weight_init)
    return chainer.links.Classifier(predictor,
                                    lossfun=choices.LOSSES[args.loss])


def build_optimizer(args, model):
    """Adam (Chainer's arithmetic, updated in place) or shift-based AdaMax,
    with the weights clipped to [-1, 1] after every update, or WAGE's
    quantized step, which clips the weights itself."""
    options = {
        'shift_adamax': {'round_norm': args.adamax_norm == 'rounded'},
        'wage_sgd': {'gradient_bits': args.gradient_bits,
                     'randomizer_bits': args.randomizer_bits},
    }.get(args.optimizer, {})
    optimizer = choices.OPTIMIZERS[args.optimizer](alpha=args.lr, **options)
    optimizer.setup(model)
    if args.glorot_step_sizes:
        step_sizes.scale_step_sizes(model, optimizer)
    if args.optimizer != 'wage_sgd':
        optimizer.add_hook(WeightClip(-1.0, 1.0))
    return optimizer


def build_updater(args, train, optimizer, device):
    """StandardUpdater over minibatches gathered from the arrays by index
    (SerialIterator's order and snapshot state, without per-example
    tuples)."""
    converter = concat_batch
    if args.random_shift or args.random_flip:
        converter = RandomShiftFlip(
            converter, datasets.get_info(args.dataset).shape,
            args.random_shift, args.random_flip)
    return training.updaters.StandardUpdater(
        ArrayIterator(train, args.batchsize), optimizer,
        converter=converter, device=device)


def evaluators(args, model, device, validation, test):
    """``(name, Evaluator)``: the test set as ``validation`` (Chainer's
    example), or with ``--validation`` the held-out images as
    ``validation`` and the test set as ``test``."""
    def evaluator(dataset):
        iterator = ArrayIterator(dataset, args.eval_batchsize, repeat=False,
                                 shuffle=False)
        return extensions.Evaluator(iterator, model, converter=concat_batch,
                                    device=device)
    if validation is None:
        return [('validation', evaluator(test))]
    return [('validation', evaluator(validation)), ('test', evaluator(test))]


def extend(trainer, args, model, train, device, evaluations, record, output):
    """The trainer's extensions: those that shape training, then Chainer's
    example's, in its order, with the project's beside them. ``output``:
    ``(snapshot, interrupts)`` on the process that writes, else ``None``.
    Returns the best-epoch tracker of ``--validation`` (or ``None``)."""
    if args.divergence_check:
        trainer.extend(run_guards.DivergenceGuard())
    schedule = step_size_schedule(args, run_history.schedule_epochs(
        args, record))
    if schedule is not None:
        trainer.extend(schedule[0], trigger=schedule[1])
    # the step size of each epoch goes into the log (not the printed table)
    trainer.extend(extensions.observe_value(
        'alpha', lambda trainer: trainer.updater.get_optimizer('main').alpha))
    if args.bn_population:  # exact BN statistics for the evaluators
        trainer.extend(population_statistics.PopulationStatistics(
            model.predictor, train, args.bn_population, args.batchsize,
            device), call_before_training=True)
    for name, evaluator in evaluations:
        trainer.extend(evaluator, name=name, call_before_training=True)
    best = model_selection.BestEpoch() if len(evaluations) > 1 else None
    if best is not None:
        trainer.extend(best)
    if output is None:
        return best
    snapshot, interrupts = output
    trainer.extend(extensions.DumpGraph('main/loss'))
    # the iterator's next orders come from NumPy's global generator
    trainer.extend(snapshots.NumpyRandomState())
    trainer.extend(snapshot, name='snapshot', trigger=snapshots.
                   snapshot_trigger(args.frequency, args.epoch))
    if interrupts is not None:
        trainer.extend(interrupts, name='interrupts')
    trainer.extend(extensions.LogReport(), call_before_training=True)
    if args.plot and extensions.PlotReport.available():
        trainer.extend(extensions.PlotReport(
            ['main/loss', 'validation/main/loss'], 'epoch',
            file_name='loss.png', postprocess=run_output.log_scale),
            call_before_training=True)
        trainer.extend(extensions.PlotReport(
            ['main/accuracy', 'validation/main/accuracy'], 'epoch',
            file_name='accuracy.png'), call_before_training=True)
    trainer.extend(extensions.PrintReport(
        run_output.report_columns(best is not None),
        out=run_output.report_stream()), call_before_training=True)
    if sys.stdout.isatty():
        trainer.extend(extensions.ProgressBar())
    return best


def train(args, processes, snapshot, interrupts):
    """Sets up and runs the trainer; returns when training has finished."""
    with processes.all_or_none():  # one line from rank 0, every rank ends
        device = devices.get_device(processes.device_spec(args.device))
        if processes.is_root:
            run_output.check_output_dir(args)
    run_output.print_header(args, device, processes.size)
    # the run a --resume continues, as its config.json records it
    record = run_history.record_for(args)
    numpy.random.seed(args.seed)
    if device.xp is chainer.backends.cuda.cupy:
        device.xp.random.seed(args.seed)

    train, validation, test = load_splits(args, processes.comm)
    model = processes.model(build_model(args))
    model.to_device(device)
    optimizer = processes.optimizer(build_optimizer(args, model))
    updater = build_updater(args, train, optimizer, device)
    trainer = training.Trainer(updater, (args.epoch, 'epoch'), out=args.out)
    processes.report_global_minibatch(trainer)
    evaluations = [(name, processes.evaluator(evaluator)) for name, evaluator
                   in evaluators(args, model, device, validation, test)]
    best = extend(trainer, args, model, train, device, evaluations, record,
                  (snapshot, interrupts) if processes.is_root else None)

    # only now, with every input checked, does anything go to --out
    with run_output.opened(trainer, args, device, snapshot, record,
                           processes):
        trainer.run(show_loop_exception_msg=False)
    if best is not None:
        print(best.summary())


def main(argv=None):
    errors.program = 'train_mnist.py'
    args = train_options.parse_args(argv)
    allocator.keep_freed_memory()  # a step's large arrays, kept for the next
    processes = multi_node.Processes(args)
    snapshot = snapshots.AtomicSnapshot(keep=args.snapshot_keep)
    # under mpiexec signals end every rank at once (multi_node)
    interrupts = run_guards.InterruptGuard(snapshot) \
        if processes.comm is None else None
    with run_guards.one_line_stops(snapshot, interrupts,
                                   args.divergence_check,
                                   processes.is_root):
        train(args, processes, snapshot, interrupts)
    return 0


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/env python
"""Train a binarized network on MNIST (Hubara et al. 2016) with Chainer.

Mirrors Chainer's examples/mnist/train_mnist.py, read top to bottom:
arguments, data, model, optimizer, trainer and its extensions, run. The
network is :class:`net.MnistMLP` or :class:`net.BinaryConvNet`, the
optimizer Adam with an exponentially decaying step size and
:class:`weight_clip.WeightClip`; option checks, devices, one-line errors
and the run's outputs live in the package ``qnn`` (docs/layout.md).
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
    if args.arch == 'cnn':
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


def build_optimizer(args, model, comm=None):
    """Adam (Chainer's arithmetic, updated in place) or shift-based AdaMax,
    with the weights clipped to [-1, 1] after every update; with a ChainerMN
    communicator ``comm``, on the gradients averaged over the ranks."""
    options = {'round_norm': args.adamax_norm == 'rounded'} \
        if args.optimizer == 'shift_adamax' else {}
    optimizer = multi_node.data_parallel_optimizer(
        choices.OPTIMIZERS[args.optimizer](alpha=args.lr, **options), comm)
    optimizer.setup(model)
    if args.glorot_step_sizes:
        step_sizes.scale_step_sizes(model, optimizer)
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


def evaluators(args, model, device, validation, test, comm=None):
    """``(name, Evaluator)``: the test set as ``validation`` (Chainer's
    example), or with ``--validation`` the held-out images as
    ``validation`` and the test set as ``test``."""
    def evaluator(dataset):
        iterator = ArrayIterator(dataset, args.eval_batchsize, repeat=False,
                                 shuffle=False)
        return multi_node.data_parallel_evaluator(
            extensions.Evaluator(iterator, model, converter=concat_batch,
                                 device=device), comm)
    if validation is None:
        return [('validation', evaluator(test))]
    return [('validation', evaluator(validation)), ('test', evaluator(test))]


def extend_training(trainer, args, model, train, device, record, comm):
    """The extensions that shape training: the global minibatch's report,
    the divergence guard, the step-size schedule, BN statistics."""
    # the loss and accuracy of the global minibatch, before anything reads
    # them (the divergence guard included)
    multi_node.extend(trainer, comm, priority=training.PRIORITY_WRITER + 2)
    if args.divergence_check:
        trainer.extend(run_guards.DivergenceGuard())
    schedule = step_size_schedule(
        args, run_history.schedule_epochs(args, record))
    if schedule is not None:
        trainer.extend(schedule[0], trigger=schedule[1])
    # the step size of each epoch goes into the log (not the printed table)
    trainer.extend(extensions.observe_value(
        'alpha', lambda trainer: trainer.updater.get_optimizer('main').alpha))
    if args.bn_population:
        # exact BN statistics for the evaluators (and the snapshot)
        trainer.extend(population_statistics.PopulationStatistics(
            model.predictor, train, args.bn_population, args.batchsize,
            device), call_before_training=True)


def run_training(args, snapshot, interrupts, comm=None):
    """Sets up and runs the trainer; returns when training has finished."""
    # a rank that fails here ends every rank, with one line from rank 0
    with multi_node.all_or_none(comm):
        device = devices.get_device(multi_node.device_spec(
            comm, args.communicator, args.device))
        if multi_node.is_root(comm):
            run_output.check_output_dir(args.out)
    run_output.print_header(args, device, comm)
    # the run a --resume continues, as its config.json records it
    record = run_history.record_for(args)
    numpy.random.seed(args.seed)
    if device.xp is chainer.backends.cuda.cupy:
        device.xp.random.seed(args.seed)

    # Data, model, optimizer, trainer
    train, validation, test = load_splits(args, comm)
    model = multi_node.synchronize_batch_normalization(build_model(args),
                                                       comm)
    model.to_device(device)
    optimizer = build_optimizer(args, model, comm)
    updater = build_updater(args, train, optimizer, device)
    trainer = training.Trainer(updater, (args.epoch, 'epoch'), out=args.out)

    # Extensions
    extend_training(trainer, args, model, train, device, record, comm)
    for name, evaluator in evaluators(args, model, device, validation, test,
                                      comm):
        trainer.extend(evaluator, name=name, call_before_training=True)
    best = model_selection.BestEpoch() if validation is not None else None
    if best is not None:
        trainer.extend(best)
    if multi_node.is_root(comm):
        run_output.extend_output(trainer, args, snapshot, interrupts,
                                 best is not None)

    # Run: only now, with every input checked, does anything go to --out
    run_output.resume_and_run(trainer, args, device, snapshot, record, comm)
    if best is not None:
        print(best.summary())


def main(argv=None):
    errors.program = 'train_mnist.py'
    args = train_options.parse_args(argv)
    comm = multi_node.connect(args)
    snapshot = snapshots.AtomicSnapshot(keep=args.snapshot_keep)
    # under mpiexec signals end every rank at once (multi_node.exit_on_signals)
    interrupts = run_guards.InterruptGuard(snapshot) if comm is None \
        else None
    with run_guards.one_line_stops(snapshot, interrupts,
                                   args.divergence_check,
                                   multi_node.is_root(comm)):
        run_training(args, snapshot, interrupts, comm)
    return 0


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/env python
"""Test accuracy of trained snapshots with running or population BN statistics.

For each snapshot (with the config.json of its run beside it) it prints the
test accuracy of the network as saved (the BN statistics the run evaluated
with) and after :func:`qnn.training.extensions.population_statistics.estimate`
over the first ``--images`` training images, what ``train_mnist.py
--bn-population N`` evaluates with. Training never reads the running
statistics, so a run with ``--bn-population`` learns the same weights as one
without: this measures, on the snapshots of a finished run, what that option
would have reported.

    .venv/bin/python bench/bn_statistics.py result/RUN/snapshot_iter_12000
    .venv/bin/python bench/bn_statistics.py --images 60000 SNAPSHOT...

A benchmark, not a test: it asserts nothing.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from qnn.backends import chainer_compat  # NOQA: E402,F401  (before chainer)
import chainer  # NOQA: E402

from qnn.iterators.array_iterator import ArrayIterator  # NOQA: E402
from qnn.iterators.array_iterator import concat_batch  # NOQA: E402
from qnn.training.extensions import population_statistics  # NOQA: E402
from qnn.training.extensions import snapshots  # NOQA: E402
from qnn.training import options as train_options  # NOQA: E402
from qnn.training import run_history  # NOQA: E402
from qnn.training import splits  # NOQA: E402
import train_mnist  # NOQA: E402


def accuracy(predictor, dataset, batch_size=1000):
    """Test accuracy in evaluation mode (the running statistics)."""
    correct = 0
    batches = ArrayIterator(dataset, batch_size, repeat=False, shuffle=False)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for batch in batches:
            x, t = concat_batch(batch)
            correct += int((predictor(x).array.argmax(1) == t).sum())
    return correct / len(dataset)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('snapshots', nargs='+', metavar='SNAPSHOT')
    parser.add_argument('--images', type=int, default=10000,
                        help='training images to average over (default '
                             '10000)')
    parser.add_argument('--data-dir', default=None)
    options = parser.parse_args(argv)
    print('| snapshot | running | population ({} images) | seconds |'
          .format(options.images))
    print('|---|---|---|---|')
    for snapshot in options.snapshots:
        config = run_history.read_config(os.path.dirname(snapshot) or '.')
        if config is None:
            sys.exit('{}: no config.json beside it'.format(snapshot))
        args = train_options.parse_args([])
        vars(args).update(config)
        args.data_dir = options.data_dir or args.data_dir
        model = train_mnist.build_model(args)
        try:
            snapshots.load_arrays(snapshot, model, 'updater/model:main/')
        except snapshots.SnapshotError as e:
            sys.exit('{}: cannot load it into the network of its '
                     'config.json: {}'.format(snapshot, e))
        train, validation, test = splits.load_splits(args)
        running = accuracy(model.predictor, test)
        start = time.time()
        try:
            population_statistics.estimate(model.predictor, train,
                                           options.images, args.batchsize)
        except ValueError as e:  # --images outside [minibatch, train set]
            sys.exit('--images: {}'.format(e))
        seconds = time.time() - start
        population = accuracy(model.predictor, test)
        print('| {} | {:.4f} | {:.4f} | {:.1f} |'.format(
            snapshot, running, population, seconds), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())

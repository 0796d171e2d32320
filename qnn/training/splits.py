"""The data of a training run: training, validation and test sets.

``--validation N`` holds out the last N training images, ``--train-subset``
and ``--test-subset`` keep the first images of each set; under ``mpiexec``
rank 0 alone reads the files and gives each rank its part.
"""
import chainer

from qnn import datasets
from qnn.training import multi_node
from qnn.utils import errors


def load_splits(args, comm=None):
    """``(train, validation, test)`` of the options ``args``; validation is
    ``None`` without ``--validation``. A problem ends the program with one
    line (:func:`qnn.utils.errors.fail`)."""
    train = validation = test = None
    with multi_node.all_or_none(comm):
        if multi_node.is_root(comm):
            train, validation, test = _read(args)
    train = multi_node.scatter(train, comm, shuffle=True, seed=args.seed)
    if args.validation:
        validation = multi_node.scatter(validation, comm)
    return train, validation, multi_node.scatter(test, comm)


def _read(args):
    try:
        train, test = datasets.get_dataset(
            args.dataset, args.data_dir,
            **datasets.INPUT_RANGES[args.input_range])
    except datasets.DatasetError as e:
        errors.fail(e)
    validation = None
    if args.validation:
        if args.validation >= len(train):
            errors.fail('--validation {} leaves no training image of {}'
                        .format(args.validation, len(train)),
                        errors.EXIT_USAGE)
        # the last images: disjoint from those trained on
        train, validation = chainer.datasets.split_dataset(
            train, len(train) - args.validation)
    if args.train_subset is not None:
        train = train[:args.train_subset]
    if args.bn_population > len(train):
        errors.fail('--bn-population {} is more than the {} training '
                    'images'.format(args.bn_population, len(train)),
                    errors.EXIT_USAGE)
    if args.test_subset is not None:
        test = test[:args.test_subset]
    return train, validation, test

"""Runs ``train_mnist.main`` in one rank of an MPI job, then saves that rank's
final model.

    mpiexec -n 2 python tests/training/mpi_worker.py DUMP_DIR [--poison I] \
        [args]

``args`` go to train_mnist.py. ``--poison I`` sets training image ``I`` to
NaN where rank 0 reads the data (the divergence test). Every rank writes
``DUMP_DIR/rank<r>.npz`` (``chainer.serializers.save_npz`` of the trained
``L.Classifier``: parameters and persistents such as the batch
normalization statistics), so that tests/training/test_multi_node.py can
compare the
ranks. The model is the trainer's own: ``Trainer.run`` is wrapped to keep a
reference to the trainer and nothing else.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer  # NOQA: E402
from chainer import training  # NOQA: E402

from qnn.datasets import mnist  # NOQA: E402
import train_mnist  # NOQA: E402


def poison(index):
    real_get_mnist = mnist.get_mnist

    def get_mnist(**kwargs):
        train, test = real_get_mnist(**kwargs)
        train._datasets[0][index, :] = float('nan')
        return train, test

    mnist.get_mnist = get_mnist


def main():
    dump_dir, argv = sys.argv[1], sys.argv[2:]
    if argv[:1] == ['--poison']:
        poison(int(argv[1]))
        argv = argv[2:]
    trainers = []
    run = training.Trainer.run

    def keep_and_run(trainer, *args, **kwargs):
        trainers.append(trainer)
        return run(trainer, *args, **kwargs)

    training.Trainer.run = keep_and_run
    status = train_mnist.main(argv)

    from mpi4py import MPI
    model = trainers[0].updater.get_optimizer('main').target
    chainer.serializers.save_npz(
        os.path.join(dump_dir, 'rank{}.npz'.format(MPI.COMM_WORLD.rank)),
        model)
    return status


if __name__ == '__main__':
    sys.exit(main())

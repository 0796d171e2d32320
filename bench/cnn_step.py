#!/usr/bin/env python
"""Time of a BinaryConvNet training step and evaluation batch on random data.

Builds ``L.Classifier(net.BinaryConvNet(10, SIZE, in_shape))`` with
``InplaceAdam`` and ``WeightClip`` as train_mnist.py does, makes one
warm-up update (lazy initialization), then times ``--steps`` updates and
``--steps`` test-mode forward passes with ``time.perf_counter`` and prints
their medians, and the epoch they extrapolate to (``--epoch-images``
training images, ``--eval-images`` evaluation images). Random images: the
cost does not depend on the pixels, and the paper's CIFAR-10 network can be
timed without CIFAR-10.

    .venv/bin/python bench/cnn_step.py                           # small, MNIST-sized
    .venv/bin/python bench/cnn_step.py --size paper --shape 3 32 32 --batch 100 --steps 2
    .venv/bin/python bench/cnn_step.py --size paper --shape 3 32 32 --batch 50 --device 0

On a GPU (``--device 0``) every timed call ends with a synchronization, so
the time is the kernels' and not only their launch.

A benchmark, not a test: it asserts nothing.
"""
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')  # as train_mnist.py

import numpy  # NOQA: E402

from qnn.backends import chainer_compat  # NOQA: E402,F401  (before chainer)
import chainer  # NOQA: E402
import chainer.links as L  # NOQA: E402

import net  # NOQA: E402
from qnn.backends import allocator  # NOQA: E402
from qnn.backends import devices  # NOQA: E402
from qnn.utils import errors  # NOQA: E402
import reference  # NOQA: E402
from qnn.optimizers.inplace_adam import InplaceAdam  # NOQA: E402
from weight_clip import WeightClip  # NOQA: E402


def timed(function, steps, synchronize):
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        function()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = reference.bench_parser(__doc__)
    parser.add_argument('--size', choices=sorted(net.ARCHITECTURES),
                        default='small')
    parser.add_argument('--shape', type=int, nargs=3, default=[1, 28, 28],
                        metavar=('C', 'H', 'W'))
    parser.add_argument('--batch', type=int, default=100)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--device', default='@numpy',
                        help='device specifier, as train_mnist.py --device')
    parser.add_argument('--epoch-images', type=int, default=60000)
    parser.add_argument('--eval-images', type=int, default=10000)
    args = parser.parse_args()
    errors.program = 'bench/cnn_step.py'
    allocator.keep_freed_memory()  # as train_mnist.py
    device = devices.get_device(args.device)
    device.use()

    def synchronize():
        if device.xp is not numpy:
            device.device.synchronize()

    numpy.random.seed(0)
    shape = tuple(args.shape)
    model = L.Classifier(net.BinaryConvNet(10, args.size, in_shape=shape))
    model.to_device(device)
    optimizer = InplaceAdam()
    optimizer.setup(model)
    optimizer.add_hook(WeightClip())
    x = device.send(numpy.random.rand(args.batch, *shape).astype(
        numpy.float32))
    t = device.send(numpy.random.randint(0, 10, args.batch).astype(
        numpy.int32))
    optimizer.update(model, x, t)
    synchronize()
    train = timed(lambda: optimizer.update(model, x, t), args.steps,
                  synchronize)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        evaluate = timed(lambda: model(x, t), args.steps, synchronize)
    steps = args.epoch_images / args.batch
    batches = args.eval_images / args.batch
    print('# BinaryConvNet {} on {} images, batch {}, device {}, {} cores; '
          '{}'.format(args.size, 'x'.join(map(str, shape)), args.batch,
                      device, os.cpu_count(), reference.cpu_model()))
    print('train step {:.4f} s, eval batch {:.4f} s (medians of {}); '
          'epoch of {} + {} images: {:.0f} s'.format(
              train, evaluate, args.steps, args.epoch_images,
              args.eval_images, steps * train + batches * evaluate))
    return 0


if __name__ == '__main__':
    sys.exit(main())

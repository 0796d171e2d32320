#!/usr/bin/env python
"""Where a training step of the reference configuration spends its time.

Runs train_mnist.py's model, optimizer and updater (``build_model``,
``build_optimizer``, ``build_updater``) on MNIST: ``--steps`` steps timed
without a profiler (ms per step), then as many under cProfile, grouped by
what the time is spent on (exclusive time of each function, per step):

    .venv/bin/python bench/step_profile.py              # 300 + 300 steps
    .venv/bin/python bench/step_profile.py -- --unit 2048 --layers 3
    .venv/bin/python bench/step_profile.py --top 10 -- --arch cnn

``--top N`` also lists the N functions of most exclusive time.

Options after ``--`` go to train_mnist.py's option parser. cProfile adds
its own cost to every Python call, so the Python groups read high next to
the array work; compare groups within one run. A benchmark, not a test.
"""
import argparse
import collections
import cProfile
import os
import pstats
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (group, test on (file, function name)); the first match wins
GROUPS = [
    # numpy.matmul, a ufunc, is not a profiled call: its time is that of
    # the function calling it (Chainer's _matmul, or the plain-array
    # backward of quantized_linear, which does little else)
    ('matrix products (BLAS)', lambda f, n: n in (
        "<method 'dot' of 'numpy.ndarray' objects>", '_matmul',
        '_backward_arrays')),
    ('optimizer update (Adam or AdaMax, clip)', lambda f, n: (
        f.endswith('qnn/optimizers/inplace_adam.py') and n in (
            '_update', 'numba_adam')) or (
        f.endswith('qnn/optimizers/shift_adamax.py') and n in (
            'update_core', 'numba_shift_adamax'))),
    ('convolution patches (im2col, col2im)', lambda f, n: (
        f.endswith('qnn/functions/quantized_convolution_2d.py') and 'col' in n)
        or (n in ('im2col_cpu', 'col2im_cpu'))),
    ('max pooling', lambda f, n: 'pool' in n or 'max_pooling' in f),
    ('sign (weights and activations)', lambda f, n: f.endswith('qst.py') and
        n in ('_sign', 'numba_sign')),
    ('batch normalization', lambda f, n: 'batch_normalization' in f),
    ('minibatch (iterator, converter)', lambda f, n: 'iterator' in f or
        f.endswith('convert.py') or f.endswith('tuple_dataset.py')),
    ('threads waiting', lambda f, n: n == "<method 'acquire' of "
        "'_thread.lock' objects>"),
]
OTHER = 'everything else (Chainer graph, Python, small NumPy calls)'


def group_of(filename, name):
    for group, test in GROUPS:
        if test(filename, name):
            return group
    return OTHER


def main():
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--top', type=int, default=0, metavar='N',
                        help='also list the N functions of most exclusive '
                             'time')
    parser.add_argument('train_options', nargs='*',
                        help='train_mnist.py options (after --)')
    args = parser.parse_args()

    sys.path.insert(0, ROOT)
    from qnn.training import options as train_options
    import train_mnist  # first: it sets OpenBLAS up before NumPy loads

    import chainer
    import numpy

    from qnn import datasets
    from qnn.backends import allocator

    allocator.keep_freed_memory()  # as train_mnist.py
    options = train_options.parse_args(args.train_options)
    numpy.random.seed(options.seed)
    train, _ = datasets.get_dataset(options.dataset, options.data_dir)
    model = train_mnist.build_model(options)
    optimizer = train_mnist.build_optimizer(options, model)
    updater = train_mnist.build_updater(
        options, train, optimizer, chainer.get_device('@numpy'))
    reporter = chainer.Reporter()
    reporter.add_observer('main', model)
    reporter.add_observers('main', model.namedlinks(skipself=True))

    def steps(n):
        for _ in range(n):
            with reporter.scope({}):
                updater.update()

    steps(20)  # warm-up: JIT compilation, allocations, BLAS threads
    start = time.perf_counter()
    steps(args.steps)
    wall_ms = (time.perf_counter() - start) * 1e3 / args.steps

    profile = cProfile.Profile()
    profile.enable()
    steps(args.steps)
    profile.disable()
    stats = pstats.Stats(profile).stats
    totals = collections.Counter()
    for (filename, _, name), (_, _, tottime, _, _) in stats.items():
        totals[group_of(filename, name)] += tottime
    profiled_ms = sum(totals.values()) * 1e3 / args.steps

    print('{} steps of {} units x {} layers, batch {}: {:.1f} ms per step '
          '(no profiler)'.format(args.steps, options.unit, options.layers,
                                 options.batchsize, wall_ms))
    print('under cProfile: {:.1f} ms per step, of which:'.format(
        profiled_ms))
    for group, seconds in totals.most_common():
        print('  {:>6.2f} ms  {}'.format(seconds * 1e3 / args.steps, group))
    if args.top:
        print('the {} functions of most exclusive time, per step:'.format(
            args.top))
        top = sorted(stats.items(), key=lambda item: -item[1][2])
        for (filename, line, name), (_, calls, tottime, _, _) in \
                top[:args.top]:
            print('  {:>6.2f} ms  {:>5.1f} calls  {}:{}({})'.format(
                tottime * 1e3 / args.steps, calls / args.steps,
                os.path.basename(filename), line, name))


if __name__ == '__main__':
    main()

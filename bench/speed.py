#!/usr/bin/env python
"""Speed: this project's training against the PyTorch peer, same run.

MLP. Alternates, ``--rounds`` times, two processes on the reference
configuration (784-1000-1000-10 binarized MLP with BN, batch 100, Adam,
weights clipped):

* project: train_mnist.py's model, optimizer and updater
  (``build_model``, ``build_optimizer``, ``build_updater``) over MNIST for
  ``--iterations`` steps (scaled to the 600 steps of an epoch), then its
  Evaluator (``evaluators``) over the 10k test images at train_mnist.py's
  evaluation batch size;
* peer: ``bench/peers/torch_mlp.py --epochs 1`` (the same network and
  training in PyTorch: one epoch, then evaluation at the project's
  evaluation batch size), run by the Python of ``--peer-venv``
  (``make bench-peers`` makes ``.venv-peer`` with torch==2.13.0; torch is
  never a dependency of the project);

and prints the median train seconds per epoch, evaluation seconds, their
sum (the whole epoch), user and system CPU seconds of the whole process
(start-up and data loading included, for both), peak RSS, and the
project/peer ratios; then the BLAS floor: NumPy's float32 matrix products
of an epoch (the forward, input-gradient and weight-gradient products of
600 steps at batch 100), timed in a process of its own in the same run.

ConvNet. For each size of ``--cnn`` (default: small and wide, MNIST-sized,
batch 100), alternates ``--rounds`` times ``bench/cnn_step.py`` and
``bench/peers/torch_convnet_step.py`` (the same BinaryConvNet in
PyTorch), ``--cnn-steps`` timed steps each, and prints the medians of
their median training step and evaluation batch, and the ratios.

Every process gets ``--threads`` BLAS/torch/numba threads.

    make bench-peers                                # once: .venv-peer
    .venv/bin/python bench/speed.py                 # CPU, both, 3 rounds
    .venv/bin/python bench/speed.py --threads 1 --cnn   # MLP only, 1 thread
    .venv/bin/python bench/speed.py --device 0      # GPU: project only

This is a benchmark, not a test: it asserts nothing. These machines drift
by up to 2x over minutes; only ratios within one run mean anything.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

import reference

ROOT = reference.ROOT
PEERS = os.path.join(ROOT, 'bench', 'peers')
PEER_SCRIPT = os.path.join(PEERS, 'torch_mlp.py')
PEER_CNN_SCRIPT = os.path.join(PEERS, 'torch_convnet_step.py')
CNN_SCRIPT = os.path.join(ROOT, 'bench', 'cnn_step.py')
# "train step 0.0490 s, eval batch 0.0180 s" (cnn_step.py) and "train step
# 0.0559 s, eval batch 0.0271 s" (the peer)
CNN_TIMES = re.compile(r'train step ([\d.]+) s, eval batch ([\d.]+) s')
EPOCH_ITERATIONS = 600  # 60000 images / batch 100
MLP_SIZES = (784, 1000, 1000, 10)  # train_mnist.py's default MLP
BATCH = 100


def epoch_products(sizes=MLP_SIZES, batch=BATCH):
    """``(a, b)`` shapes of the float32 matrix products of one training
    step of the MLP of layer ``sizes``: each layer's forward product, its
    weight gradient and, but for the first layer, its input gradient."""
    shapes = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        shapes.append(((batch, n_in), (n_in, n_out)))  # forward
        shapes.append(((n_out, batch), (batch, n_in)))  # weight gradient
        if n_in != sizes[0]:
            shapes.append(((batch, n_out), (n_out, n_in)))  # input gradient
    return shapes


def blas_child():
    """Runs in its own process: seconds of an epoch's matrix products
    (:func:`epoch_products`, 600 steps) with NumPy's BLAS, as JSON."""
    import numpy
    rng = numpy.random.default_rng(0)
    pairs = [(rng.standard_normal(a, numpy.float32),
              rng.standard_normal(b, numpy.float32))
             for a, b in epoch_products()]
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in pairs)
    steps, start = 0, time.perf_counter()
    while steps < 20 or time.perf_counter() - start < 1.0:
        for a, b in pairs:
            numpy.matmul(a, b)
        steps += 1
    seconds = (time.perf_counter() - start) / steps
    json.dump({'epoch_s': seconds * EPOCH_ITERATIONS,
               'gflops': flops / seconds / 1e9}, sys.stdout)


def child(args):
    """Runs in the measured process: one project measurement, as JSON."""
    sys.path.insert(0, ROOT)
    from qnn.training import options as train_options
    import train_mnist  # first: it sets OpenBLAS up before NumPy loads

    import chainer
    import numpy

    from qnn.backends import devices
    from qnn.datasets import mnist

    from qnn.backends import allocator
    allocator.keep_freed_memory()  # as train_mnist.py
    options = train_options.parse_args(['--device', args.device])
    device = devices.get_device(options.device)
    numpy.random.seed(0)
    train, test = mnist.get_mnist()
    model = train_mnist.build_model(options)
    model.to_device(device)
    optimizer = train_mnist.build_optimizer(options, model)
    updater = train_mnist.build_updater(options, train, optimizer, device)

    def synchronize():
        if device.xp is not numpy:
            device.device.synchronize()

    # as in Trainer: each step reports into a fresh observation
    reporter = chainer.Reporter()
    reporter.add_observer('main', model)
    reporter.add_observers('main', model.namedlinks(skipself=True))

    def step():
        with reporter.scope({}):
            updater.update()

    for _ in range(10):  # warm-up: allocations, BLAS threads, kernels
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(args.iterations):
        step()
    synchronize()
    train_seconds = time.perf_counter() - start

    (_, evaluator), = train_mnist.evaluators(options, model, device, None,
                                             test)
    start = time.perf_counter()
    with reporter.scope({}):
        result = evaluator.evaluate()
    synchronize()
    eval_seconds = time.perf_counter() - start
    json.dump({
        'train_s': train_seconds * EPOCH_ITERATIONS / args.iterations,
        'eval_s': eval_seconds,
        'val_acc': float(result['main/accuracy']),
        'eval_batch': options.eval_batchsize,
        'device': str(device)}, sys.stdout)


def environment(threads):
    env = dict(os.environ)
    for name in reference.THREAD_VARIABLES + ('NUMBA_NUM_THREADS',):
        env[name] = str(threads)
    return env


def measure(command, threads):
    """Runs ``command``; returns its stdout and resource usage."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE,
                               env=environment(threads), cwd=ROOT,
                               universal_newlines=True)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError('{} exited {}'.format(' '.join(command), code))
    return stdout, {'user_s': usage.ru_utime, 'sys_s': usage.ru_stime,
                    'rss_mib': usage.ru_maxrss / 1024.0}


def run_project(args):
    stdout, usage = measure(
        [sys.executable, os.path.abspath(__file__), '--child',
         '--iterations', str(args.iterations), '--device', args.device],
        args.threads)
    usage.update(json.loads(stdout))
    usage['epoch_s'] = usage['train_s'] + usage['eval_s']
    return usage


def run_peer(args, python, eval_batch):
    stdout, usage = measure(
        [python, PEER_SCRIPT, '--epochs', '1', '--threads', str(args.threads),
         '--eval-batch', str(eval_batch), '--json'], args.threads)
    peer = json.loads(stdout)
    record = peer['records'][0]
    usage.update({'torch': peer['torch'], 'train_s': record['train_s'],
                  'eval_s': record['eval_s'],
                  'epoch_s': record['train_s'] + record['eval_s'],
                  'val_acc': record['test_accuracy'],
                  'eval_batch': eval_batch})
    return usage


def cnn_times(command, threads):
    """(train step, eval batch) seconds printed by a ConvNet step script."""
    stdout, _ = measure(command, threads)
    match = CNN_TIMES.search(stdout)
    if match is None:
        raise RuntimeError('no step time in the output of {}:\n{}'.format(
            ' '.join(command), stdout))
    return float(match.group(1)), float(match.group(2))


def run_cnn(args, python):
    """Project and peer ConvNet steps, alternating; a table of medians."""
    lines = ['| ConvNet, batch 100 | project step s | peer step s | ratio '
             '| project eval batch s | peer eval batch s | ratio |',
             '|---|---|---|---|---|---|---|']
    for size in args.cnn:
        common = ['--size', size, '--batch', '100', '--steps',
                  str(args.cnn_steps)]
        project, peer = [], []
        for _ in range(args.rounds):
            project.append(cnn_times([sys.executable, CNN_SCRIPT] + common,
                                     args.threads))
            peer.append(cnn_times([python, PEER_CNN_SCRIPT] + common + [
                '--threads', str(args.threads)], args.threads))
            sys.stderr.write('{}: project {:.4f} s/step, peer {:.4f}\n'.format(
                size, project[-1][0], peer[-1][0]))
        (a, b), (c, d) = [[statistics.median(r[k] for r in runs)
                           for k in (0, 1)] for runs in (project, peer)]
        lines.append('| {} | {:.4f} | {:.4f} | {:.2f} | {:.4f} | {:.4f} | '
                     '{:.2f} |'.format(size, a, c, a / c, b, d, b / d))
    return '\n'.join(lines)


def peer_python(venv):
    """The Python of the peers' environment (``make bench-peers``); exits
    with one line if it is not there."""
    python = os.path.join(venv, 'bin', 'python')
    if not os.path.isfile(os.path.join(venv, '.installed')):
        sys.exit('bench/speed.py: error: no PyTorch peer environment in {}: '
                 'run make bench-peers (or pass --no-peer)'.format(venv))
    return python


def blas_floor(args):
    """``(seconds, GFLOP/s)`` of an epoch's matrix products with NumPy."""
    stdout, _ = measure([sys.executable, os.path.abspath(__file__),
                         '--blas-child'], args.threads)
    floor = json.loads(stdout)
    return floor['epoch_s'], floor['gflops']


def row(name, runs):
    def median(key):
        return statistics.median(run[key] for run in runs)
    return name, {key: median(key) for key in
                  ('train_s', 'eval_s', 'epoch_s', 'user_s', 'sys_s',
                   'rss_mib')}


def table(rows):
    header = ['', 'train s/epoch', 'eval s (10k)', 'epoch s (train + eval)',
              'user CPU s', 'sys CPU s', 'peak RSS MiB']
    keys = ['train_s', 'eval_s', 'epoch_s', 'user_s', 'sys_s', 'rss_mib']
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join('---' for _ in header) + '|']
    for name, values in rows:
        lines.append('| ' + ' | '.join(
            [name] + ['{:.2f}'.format(values[k]) if k != 'rss_mib' else
                      '{:.0f}'.format(values[k]) for k in keys]) + ' |')
    if len(rows) == 2:
        (_, a), (_, b) = rows
        lines.append('| ratio project/peer | ' + ' | '.join(
            '{:.2f}'.format(a[k] / b[k]) if b[k] else '-' for k in keys)
            + ' |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--iterations', type=int, default=EPOCH_ITERATIONS,
                        help='timed training steps of the project')
    parser.add_argument('--threads', type=int, default=os.cpu_count() or 1,
                        help='BLAS (and torch) threads of every process')
    parser.add_argument('--device', default='-1',
                        help='device of the project (the peer is CPU only)')
    parser.add_argument('--cnn', nargs='*', default=['small', 'wide'],
                        choices=['small', 'wide', 'paper'],
                        help='ConvNet sizes to compare with the peer (none: '
                             'MLP only)')
    parser.add_argument('--cnn-steps', type=int, default=20,
                        help='timed steps of each ConvNet process')
    parser.add_argument('--no-peer', dest='peer', action='store_false')
    parser.add_argument('--peer-venv', default=os.path.join(ROOT,
                                                            '.venv-peer'))
    parser.add_argument('--out', default=os.path.join(ROOT, 'result',
                                                      'bench-speed'))
    parser.add_argument('--child', action='store_true',
                        help=argparse.SUPPRESS)
    parser.add_argument('--blas-child', action='store_true',
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.blas_child:
        return blas_child()
    if args.child:
        return child(args)
    if args.rounds < 1 or args.iterations < 1 or args.threads < 1:
        parser.error('--rounds, --iterations and --threads must be positive')
    on_cpu = args.device in ('-1', '@numpy')
    use_peer = args.peer and on_cpu
    os.makedirs(args.out, exist_ok=True)
    python = peer_python(args.peer_venv) if use_peer else None

    started = time.time()
    project, peer = run_mlp(args, python if use_peer else None)
    floor = blas_floor(args) if on_cpu else None
    cnn = run_cnn(args, python) if use_peer and args.cnn else None
    minutes = (time.time() - started) / 60
    text = report(args, project, peer, floor, cnn, minutes)
    print(text)
    with open(os.path.join(args.out, 'table.md'), 'w') as f:
        f.write(text + '\n')
    return 0


def run_mlp(args, python):
    """The MLP's project and (with ``python``) peer runs, alternating."""
    project, peer = [], []
    for i in range(args.rounds):
        project.append(run_project(args))
        sys.stderr.write('round {}: project {:.2f} s/epoch'.format(
            i + 1, project[-1]['train_s']))
        if python:
            peer.append(run_peer(args, python, project[-1]['eval_batch']))
            sys.stderr.write(', peer {:.2f} s/epoch'.format(
                peer[-1]['train_s']))
        sys.stderr.write('\n')
    return project, peer


def report(args, project, peer, floor, cnn, minutes):
    """The tables and notes of a run, as Markdown."""
    rows = [row('project (Chainer, {})'.format(project[0]['device']),
                project)]
    if peer:
        rows.append(row('peer (PyTorch {})'.format(peer[0]['torch']), peer))
    lines = [
        '# {}; {} cores; {} thread(s) per process; {} round(s), medians; '
        '{}; {:.1f} min'.format(
            reference.cpu_model(), os.cpu_count(), args.threads, args.rounds,
            reference.stack(), minutes),
        '# MLP: project {} timed iterations scaled to 600, peer one epoch '
        '(bench/peers/torch_mlp.py); evaluation batch {}; CPU seconds and '
        'RSS are of the whole process'.format(args.iterations,
                                              project[0]['eval_batch']),
        '',
        table(rows),
        '',
        'validation accuracy after one epoch: project {}{}'.format(
            ' '.join('{:.4f}'.format(r['val_acc']) for r in project),
            '; peer ' + ' '.join('{:.4f}'.format(r['val_acc'])
                                 for r in peer) if peer else ''),
    ]
    if floor is not None:
        lines.append(
            'BLAS floor (NumPy float32, the matrix products of 600 steps at '
            'batch 100, {1:.0f} GFLOP/s): {0:.2f} s/epoch; project train time '
            'is {2:.1f}x the floor'.format(*floor, rows[0][1]['train_s'] /
                                        floor[0]))
    if cnn:
        lines += ['', '# ConvNet (MNIST-sized, random images; peer: '
                  'bench/peers/torch_convnet_step.py): medians of '
                  '{} rounds of {} timed steps each'.format(
                      args.rounds, args.cnn_steps), '', cnn]
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(main())

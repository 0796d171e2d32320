#!/usr/bin/env python
"""Benchmark: one process against ``mpiexec -n N`` at equal global batch.

Trains train_mnist.py's reference configuration (by default 20 epochs,
1000 units, global batch 100, CPU) twice, one run after the other:

* 1 process, ``--batchsize 100``, ``cores`` BLAS threads;
* N processes (``mpiexec -n N ... --communicator naive``),
  ``--batchsize 100/N`` each, ``cores / N`` BLAS threads each,

so both runs use every core and see the same global minibatch. It prints a
markdown table of median seconds per epoch (training plus that epoch's
evaluation, from the log's ``elapsed_time``), the validation accuracy at
the end and at its best, the peak resident memory of the largest process
and the wall-clock time (with start-up, data loading and scattering).
Arguments after ``--`` go to both trainings, e.g.

    .venv/bin/python bench/data_parallel.py
    .venv/bin/python bench/data_parallel.py --epoch 1 -- --train-subset 2000

Needs the MPI extra (``make mpi``). A benchmark, not a test: it asserts
nothing.
"""
import datetime
import os
import shutil
import subprocess
import sys

import reference

ROOT = reference.ROOT


def run(out, processes, batchsize, threads, args, mpiexec):
    command = [sys.executable, os.path.join(ROOT, 'train_mnist.py'),
               '--noplot', '--seed', str(args.seed), '--epoch',
               str(args.epoch), '--batchsize', str(batchsize),
               '--out', out] + args.train_args
    if processes > 1:
        command = [mpiexec, '-n', str(processes)] + command + [
            '--communicator', 'naive']
    env = dict(os.environ)
    for name in reference.THREAD_VARIABLES:
        env[name] = str(threads)
    os.makedirs(out, exist_ok=True)
    started = datetime.datetime.now()
    with open(os.path.join(out, 'stdout.txt'), 'w') as stdout:
        process = subprocess.Popen(command, stdout=stdout,
                                   stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL, cwd=ROOT)
    # the peak RSS of mpiexec's children is that of its largest rank
    code, peak = reference.wait(process)
    wall = (datetime.datetime.now() - started).total_seconds()
    if code != 0:
        sys.stderr.write('{} process(es): exited {}; see {}\n'.format(
            processes, code, os.path.join(out, 'stdout.txt')))
    row = reference.summarize(args.seed, out, peak, code)
    row.update(processes=processes, batchsize=batchsize, threads=threads,
               wall=wall)
    return row


def mpi_version(mpiexec):
    text = subprocess.run([mpiexec, '--version'], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          universal_newlines=True).stdout
    for line in text.splitlines():
        if line.strip().startswith('Version:'):  # MPICH's Hydra
            return 'mpiexec (Hydra) ' + line.split(':', 1)[1].strip()
    return (text.strip().splitlines() or [mpiexec])[0]


def table(rows):
    header = ['processes', 'batch per process', 'BLAS threads each',
              's/epoch (median)', 'speed-up', 'val acc final',
              'best (epoch)', 'peak RSS MiB (largest process)',
              'wall s (with start-up)']
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join('---' for _ in header) + '|']
    base = rows[0]['seconds_per_epoch']
    for row in rows:
        cells = [str(row['processes']), str(row['batchsize']),
                 str(row['threads']),
                 '{:.2f}'.format(row['seconds_per_epoch']),
                 '{:.2f}x'.format(base / row['seconds_per_epoch']),
                 '{:.4f}'.format(row['final']),
                 '{:.4f} ({})'.format(row['best'], row['best_epoch']),
                 '{:.0f}'.format(row['peak_mib']),
                 '{:.0f}'.format(row['wall'])]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main():
    parser = reference.bench_parser(__doc__)
    parser.add_argument('--processes', type=int, default=2)
    parser.add_argument('--global-batch', type=int, default=100)
    parser.add_argument('--epoch', type=int, default=20)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=os.path.join(ROOT, 'result',
                                                      'bench-data-parallel'),
                        help='directory for the runs and table.md')
    args = reference.parse_bench_args(parser)
    train_args = args.train_args
    if args.processes < 2 or args.epoch < 1 or \
            args.global_batch % args.processes:
        parser.error('--processes must be 2 or more and divide '
                     '--global-batch; --epoch must be positive')
    mpiexec = os.path.join(os.path.dirname(sys.executable), 'mpiexec')
    if not os.access(mpiexec, os.X_OK):
        mpiexec = shutil.which('mpiexec')
    if mpiexec is None:
        parser.error('no mpiexec beside {} or on PATH: run `make mpi`'
                     .format(sys.executable))
    cores = os.cpu_count() or 1

    rows = [
        run(os.path.join(args.out, '1proc'), 1, args.global_batch, cores,
            args, mpiexec),
        run(os.path.join(args.out, '{}proc'.format(args.processes)),
            args.processes, args.global_batch // args.processes,
            max(1, cores // args.processes), args, mpiexec),
    ]

    text = '\n'.join([
        '# train_mnist.py {} (epochs {}, seed {}, global batch {})'.format(
            ' '.join(train_args) or '(defaults)', args.epoch, args.seed,
            args.global_batch),
        '# {}; {} cores; {}, {}'.format(
            reference.cpu_model(), cores, reference.stack(),
            mpi_version(mpiexec)),
        '',
        table(rows),
    ])
    print(text)
    with open(os.path.join(args.out, 'table.md'), 'w') as f:
        f.write(text + '\n')
    return 1 if any(row['exit'] != 0 for row in rows) else 0


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/env python
"""Reference benchmark: train_mnist.py's configuration over several seeds.

Runs ``train_mnist.py`` (by default 20 epochs, batch 100, 1000 units, CPU)
once per seed, each in its own process, and prints a markdown table of:
median seconds per epoch (training plus that epoch's evaluation, from the
log's ``elapsed_time``), validation accuracy at epochs 1, 5, 10, 20, the
final and best validation accuracy, and the peak resident memory of the
process. Arguments after ``--`` go to train_mnist.py unchanged, e.g.

    .venv/bin/python bench/reference.py --seeds 0 1 2 --jobs 2
    .venv/bin/python bench/reference.py -- --lr-schedule constant --lr 1e-3

With ``--jobs N`` it runs N seeds at a time and gives each process
``cores / N`` BLAS threads; seconds per epoch depend on that, so the table
header says how it ran. This is a benchmark, not a test: it asserts nothing.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT_EPOCHS = (1, 5, 10, 20)
THREAD_VARIABLES = ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS',
                    'MKL_NUM_THREADS')


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def stack():
    """``'Python X, NumPy Y, Chainer Z'`` of this interpreter."""
    sys.path.insert(0, ROOT)
    from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
    import chainer
    import numpy
    return 'Python {}, NumPy {}, Chainer {}'.format(
        platform.python_version(), numpy.__version__, chainer.__version__)


def chainer_predictor(snapshot, options):
    """The trained predictor of ``snapshot``, built from ``options`` (the
    run's, as ``export.read_options`` returns them); raises
    ``snapshots.SnapshotError`` if its arrays cannot be loaded."""
    sys.path.insert(0, ROOT)
    import train_mnist
    from qnn.training import options as train_options
    from qnn.training.extensions import snapshots
    args = train_options.parse_args([])
    vars(args).update(vars(options))
    model = train_mnist.build_model(args)
    snapshots.load_arrays(snapshot, model, 'updater/model:main/')
    return model.predictor


def bench_parser(doc):
    """An argument parser for a benchmark script documented by ``doc``."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_bench_args(parser, argv=None):
    """Parses the benchmark's own arguments; those after ``--`` are kept,
    unparsed, in ``args.train_args`` for train_mnist.py."""
    argv = sys.argv[1:] if argv is None else list(argv)
    train_args = []
    if '--' in argv:
        cut = argv.index('--')
        argv, train_args = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)
    args.train_args = train_args
    return args


def start(seed, args, threads):
    out = os.path.join(args.out, 'seed{}'.format(seed))
    return spawn(['--seed', str(seed), '--epoch', str(args.epoch)]
                 + args.train_args, out, threads), out


def spawn(train_args, out, threads):
    """Starts train_mnist.py with ``threads`` BLAS threads, writing into
    ``out`` (its stdout and stderr into out/stdout.txt)."""
    command = [sys.executable, os.path.join(ROOT, 'train_mnist.py'),
               '--noplot', '--out', out] + list(train_args)
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    os.makedirs(out, exist_ok=True)
    stdout = open(os.path.join(out, 'stdout.txt'), 'w')
    process = subprocess.Popen(command, stdout=stdout,
                               stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    stdout.close()
    return process


def wait(process):
    """Waits for ``process``; returns (exit status, peak RSS in MiB)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024.0


def summarize(seed, out, peak_mib, code):
    with open(os.path.join(out, 'log')) as f:
        log = [entry for entry in json.load(f) if entry['epoch'] >= 1]
    elapsed = [0.0] + [entry['elapsed_time'] for entry in log]
    # the first difference includes the evaluation before training; drop it
    seconds = [b - a for a, b in zip(elapsed[1:], elapsed[2:])] or \
        [elapsed[1]]
    accuracy = {entry['epoch']: entry['validation/main/accuracy']
                for entry in log}
    best_epoch = max(accuracy, key=lambda e: (accuracy[e], -e))
    return {
        'seed': seed, 'exit': code, 'epochs': len(log),
        'seconds_per_epoch': statistics.median(seconds),
        'accuracy': accuracy,
        'final': accuracy[max(accuracy)],
        'best': accuracy[best_epoch], 'best_epoch': best_epoch,
        'peak_mib': peak_mib,
    }


def table(rows, epochs):
    shown = [e for e in REPORT_EPOCHS if e <= epochs]
    header = (['seed', 's/epoch (median)'] +
              ['val acc @{}'.format(e) for e in shown] +
              ['final', 'best (epoch)', 'peak RSS MiB'])
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join('---' for _ in header) + '|']
    for row in rows:
        cells = ([str(row['seed']), '{:.2f}'.format(row['seconds_per_epoch'])]
                 + ['{:.4f}'.format(row['accuracy'][e]) if e in
                    row['accuracy'] else '-' for e in shown]
                 + ['{:.4f}'.format(row['final']),
                    '{:.4f} ({})'.format(row['best'], row['best_epoch']),
                    '{:.0f}'.format(row['peak_mib'])])
        lines.append('| ' + ' | '.join(cells) + ' |')
    if len(rows) > 1:
        def mean(key):
            return statistics.mean(row[key] for row in rows)
        cells = (['mean', '{:.2f}'.format(mean('seconds_per_epoch'))] +
                 ['{:.4f}'.format(statistics.mean(
                     row['accuracy'][e] for row in rows))
                  if all(e in row['accuracy'] for row in rows) else '-'
                  for e in shown] +
                 ['{:.4f}'.format(mean('final')),
                  '{:.4f}'.format(mean('best')),
                  '{:.0f}'.format(max(row['peak_mib'] for row in rows))])
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main():
    parser = bench_parser(__doc__)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--epoch', type=int, default=20)
    parser.add_argument('--jobs', type=int, default=1,
                        help='seeds trained at the same time')
    parser.add_argument('--threads', type=int, default=None,
                        help='BLAS threads of each run (default: cores / '
                             'jobs)')
    parser.add_argument('--out', default=os.path.join(ROOT, 'result',
                                                      'bench-reference'),
                        help='directory for the runs and table.md')
    parser.add_argument('--summarize', action='store_true',
                        help='train nothing: print the table of the runs '
                             'already in --out (peak RSS unknown, NaN)')
    args = parse_bench_args(parser)
    train_args = args.train_args
    if args.jobs < 1 or args.epoch < 1:
        parser.error('--jobs and --epoch must be positive')
    cores = os.cpu_count() or 1
    threads = args.threads or max(1, cores // args.jobs)

    started = datetime.datetime.now()
    pending = [] if args.summarize else list(args.seeds)
    running = []
    results = []
    if args.summarize:
        for seed in args.seeds:
            out = os.path.join(args.out, 'seed{}'.format(seed))
            try:
                results.append(summarize(seed, out, float('nan'), 0))
            except (OSError, ValueError) as e:
                sys.stderr.write('seed {}: no usable log ({})\n'.format(
                    seed, e))
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            process, out = start(seed, args, threads)
            running.append((seed, process, out))
        seed, process, out = running.pop(0)
        code, peak = wait(process)
        if code != 0:
            sys.stderr.write('seed {}: train_mnist.py exited {}; see {}\n'
                             .format(seed, code,
                                     os.path.join(out, 'stdout.txt')))
        try:
            results.append(summarize(seed, out, peak, code))
        except (OSError, ValueError) as e:
            sys.stderr.write('seed {}: no usable log ({})\n'.format(seed, e))
    if not results:
        return 1
    results.sort(key=lambda row: row['seed'])
    minutes = (datetime.datetime.now() - started).total_seconds() / 60

    text = '\n'.join([
        '# train_mnist.py {} (epochs {}, seeds {})'.format(
            ' '.join(train_args) or '(defaults)', args.epoch,
            ' '.join(map(str, args.seeds))),
        '# {}; {} cores; {} run(s) at a time, {} BLAS thread(s) each; '
        '{}; {:.1f} min in all'.format(
            cpu_model(), cores, args.jobs, threads, stack(), minutes),
        '',
        table(results, args.epoch),
    ])
    print(text)
    with open(os.path.join(args.out, 'table.md'), 'w') as f:
        f.write(text + '\n')
    failed = len(args.seeds) - len(results) + sum(
        row['exit'] != 0 for row in results)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

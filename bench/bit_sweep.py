#!/usr/bin/env python
"""Bit-width sweep: validation accuracy of the 2x1000 MLP per bit width.

Trains train_mnist.py's network (batch 100, 1000 units, Adam with the
default step-size decay, one seed) for a fixed number of epochs for every
pair of weight bits x activation bits in {1, 2, 4, 32} with the linear
quantizer, plus a row with the log quantizer and a row with 6-bit
gradients, each run in its own process, and writes a markdown table of the
final and best validation accuracy (and the final training loss) to
stdout and to OUT/table.md. Arguments after ``--`` go to every run, e.g.

    .venv/bin/python bench/bit_sweep.py --epoch 15 --jobs 2

This is a benchmark, not a test: it asserts nothing. One seed per
configuration: differences below about 0.002 are within the spread of seeds
(see the reference table in README).
"""
import datetime
import json
import os
import statistics
import sys

import reference

LINEAR_BITS = (1, 2, 4, 32)
# (label, options) of the rows beyond the linear weights x activations grid
EXTRA_RUNS = [
    ('log 4/4', ['--quantizer', 'log', '--weight-bits', '4',
                 '--activation-bits', '4']),
    ('linear 1/1, gradients 6', ['--gradient-bits', '6']),
]


def configurations():
    runs = []
    for w in LINEAR_BITS:
        for a in LINEAR_BITS:
            runs.append(('linear {}/{}'.format(w, a),
                         ['--weight-bits', str(w), '--activation-bits',
                          str(a)]))
    return runs + EXTRA_RUNS


def directory(label):
    return label.replace(' ', '_').replace('/', '-').replace(',', '')


def final_loss(out):
    with open(os.path.join(out, 'log')) as f:
        return json.load(f)[-1].get('main/loss', float('nan'))


def grid_table(results):
    header = ['weights \\ activations'] + [
        '{} bit'.format(a) if a < 32 else '32 (float)' for a in LINEAR_BITS]
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join('---' for _ in header) + '|']
    for w in LINEAR_BITS:
        cells = ['{} bit'.format(w) if w < 32 else '32 (float)']
        for a in LINEAR_BITS:
            row = results.get('linear {}/{}'.format(w, a))
            cells.append('-' if row is None else '{:.4f} ({:.4f})'.format(
                row['final'], row['best']))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def run_table(results, labels):
    header = ['run', 'exit', 'epochs', 'final val acc', 'best (epoch)',
              'final train loss', 's/epoch (median)']
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join('---' for _ in header) + '|']
    for label in labels:
        row = results.get(label)
        if row is None:
            lines.append('| {} | no log |'.format(label) + ' |' * 5)
            continue
        lines.append('| ' + ' | '.join([
            label, str(row['exit']), str(row['epochs']),
            '{:.4f}'.format(row['final']),
            '{:.4f} ({})'.format(row['best'], row['best_epoch']),
            '{:.4f}'.format(row['loss']),
            '{:.2f}'.format(row['seconds_per_epoch'])]) + ' |')
    return '\n'.join(lines)


def main():
    parser = reference.bench_parser(__doc__)
    parser.add_argument('--epoch', type=int, default=10)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--jobs', type=int, default=1,
                        help='runs trained at the same time')
    parser.add_argument('--threads', type=int, default=None,
                        help='BLAS threads of each run (default: cores / '
                             'jobs)')
    parser.add_argument('--only', nargs='+', default=None, metavar='LABEL',
                        help='run only these rows (labels as in the table)')
    parser.add_argument('--out', default=os.path.join(
        reference.ROOT, 'result', 'bench-bit-sweep'),
        help='directory for the runs and table.md')
    args = reference.parse_bench_args(parser)
    train_args = args.train_args
    if args.jobs < 1 or args.epoch < 1:
        parser.error('--jobs and --epoch must be positive')
    runs = configurations()
    if args.only:
        unknown = set(args.only) - {label for label, _ in runs}
        if unknown:
            parser.error('unknown rows: {}'.format(', '.join(sorted(unknown))))
        runs = [run for run in runs if run[0] in args.only]
    cores = os.cpu_count() or 1
    threads = args.threads or max(1, cores // args.jobs)

    started = datetime.datetime.now()
    pending = list(runs)
    running = []
    results = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            label, options = pending.pop(0)
            out = os.path.join(args.out, directory(label))
            process = reference.spawn(
                ['--seed', str(args.seed), '--epoch', str(args.epoch)]
                + options + train_args, out, threads)
            running.append((label, process, out))
        label, process, out = running.pop(0)
        code, peak = reference.wait(process)
        if code != 0:
            sys.stderr.write('{}: train_mnist.py exited {}; see {}\n'.format(
                label, code, os.path.join(out, 'stdout.txt')))
        try:
            row = reference.summarize(args.seed, out, peak, code)
            row['loss'] = final_loss(out)
            results[label] = row
        except (OSError, ValueError, KeyError) as e:
            sys.stderr.write('{}: no usable log ({})\n'.format(label, e))
        print('{:>26}: exit {}, final {}'.format(
            label, code, '{:.4f}'.format(results[label]['final'])
            if label in results else '-'), file=sys.stderr, flush=True)
    minutes = (datetime.datetime.now() - started).total_seconds() / 60

    text = '\n'.join([
        '# bit sweep: {} epochs, seed {}{}'.format(
            args.epoch, args.seed,
            ', ' + ' '.join(train_args) if train_args else ''),
        '# {}; {} cores; {} run(s) at a time, {} BLAS thread(s) each; '
        '{}; {:.1f} min in all'.format(
            reference.cpu_model(), cores, args.jobs, threads,
            reference.stack(), minutes),
        '',
        'Final (best) validation accuracy, linear quantizer:',
        '',
        grid_table(results),
        '',
        run_table(results, [label for label, _ in runs]),
    ])
    if results:
        text += '\n\nmedian s/epoch over all runs: {:.2f}\n'.format(
            statistics.median(row['seconds_per_epoch']
                              for row in results.values()))
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'table.md'), 'w') as f:
        f.write(text)
    failed = len(runs) - len(results) + sum(
        row['exit'] != 0 for row in results.values())
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

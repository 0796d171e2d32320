#!/usr/bin/env python
"""GPU check: does ``--gpu=0`` work here, and how fast is it?

Runs, and prints one ``PASS``/``FAIL`` line for each:

1. the GPU variants of the test suite (``pytest -m gpu`` with
   ``QNN_REQUIRE_GPU=1``, so that a test that would be skipped for want of
   CUDA fails instead);
2. a short training (``--epoch 2 --train-subset 10000``) on ``--device``
   and on the CPU with the same seed: both must finish, and their final
   validation accuracies must agree within ``--tolerance`` (cuBLAS sums in
   another order than OpenBLAS, so the runs are not bit-identical);
3. ``bench/speed.py --device D --no-peer --rounds 1``: train seconds per
   epoch on the GPU;
4. ``bench/cnn_step.py --size paper`` on 32x32x3 images, batch 50: what an
   epoch of the paper's CIFAR-10 network costs on the GPU (random images);
5. one epoch of each full MNIST recipe (``--recipe binarynet-theano``,
   3x4096, and ``binarynet-torch``, 3x2048) on the GPU: its seconds, from
   which the recipes' 1000 epochs follow.

``make gpu-check`` runs it (after ``make gpu``); exit status 0 only if all
pass. Outputs go to ``--out``.
"""
import json
import os
import subprocess
import sys

import reference

ROOT = reference.ROOT


def run(command, log, env=None):
    with open(log, 'w') as f:
        return subprocess.run(command, cwd=ROOT, stdout=f,
                              stderr=subprocess.STDOUT, env=env).returncode


def tail(path, lines=1):
    with open(path) as f:
        text = f.read().strip().splitlines()
    return ' | '.join(text[-lines:]) if text else '(no output)'


def final_accuracy(out):
    with open(os.path.join(out, 'log')) as f:
        return json.load(f)[-1]['validation/main/accuracy']


def check_tests(args):
    log = os.path.join(args.out, 'pytest-gpu.txt')
    env = dict(os.environ, QNN_REQUIRE_GPU='1')
    code = run([sys.executable, '-m', 'pytest', 'tests', '-m', 'gpu', '-q',
                '-p', 'no:cacheprovider'], log, env)
    return code == 0, 'GPU test variants: {}'.format(tail(log))


def check_training(args):
    results = {}
    for device in (args.device, '-1'):
        out = os.path.join(args.out, 'train-device{}'.format(device))
        log = out + '.txt'
        code = run([sys.executable, 'train_mnist.py', '--device', device,
                    '--epoch', '2', '--train-subset', '10000', '--noplot',
                    '--seed', '0', '--out', out], log)
        if code != 0:
            return False, 'training on device {} exited {}: {}'.format(
                device, code, tail(log))
        results[device] = final_accuracy(out)
    gpu, cpu = results[args.device], results['-1']
    ok = abs(gpu - cpu) <= args.tolerance
    return ok, ('2-epoch training, seed 0: device {} accuracy {:.4f}, CPU '
                '{:.4f} (tolerance {})'.format(args.device, gpu, cpu,
                                               args.tolerance))


def check_speed(args):
    log = os.path.join(args.out, 'speed.txt')
    code = run([sys.executable, 'bench/speed.py', '--device', args.device,
                '--no-peer', '--rounds', '1',
                '--out', os.path.join(args.out, 'speed')], log)
    return code == 0, 'bench/speed.py --device {}: {}'.format(
        args.device, tail(log, 3))


def check_paper_cnn(args):
    log = os.path.join(args.out, 'cnn-paper.txt')
    code = run([sys.executable, 'bench/cnn_step.py', '--size', 'paper',
                '--shape', '3', '32', '32', '--batch', '50', '--steps', '10',
                '--epoch-images', '50000', '--device', args.device], log)
    return code == 0, 'paper CNN on device {}: {}'.format(args.device,
                                                          tail(log))


def check_recipe_epochs(args):
    lines = []
    ok = True
    for recipe in ('binarynet-theano', 'binarynet-torch'):
        out = os.path.join(args.out, 'recipe-' + recipe)
        log = out + '.txt'
        code = run([sys.executable, 'train_mnist.py', '--recipe', recipe,
                    '--epoch', '1', '--device', args.device, '--noplot',
                    '--out', out], log)
        if code != 0:
            ok = False
            lines.append('{} exited {}: {}'.format(recipe, code, tail(log)))
            continue
        with open(os.path.join(out, 'log')) as f:
            seconds = json.load(f)[-1]['elapsed_time']
        lines.append('{}: one epoch {:.1f} s with its evaluations'.format(
            recipe, seconds))
    return ok, 'full recipes on device {}: {}'.format(args.device,
                                                      '; '.join(lines))


def main():
    parser = reference.bench_parser(__doc__)
    parser.add_argument('--device', default='0')
    parser.add_argument('--tolerance', type=float, default=0.01,
                        help='largest difference of final accuracy')
    parser.add_argument('--out', default=os.path.join(ROOT, 'result',
                                                      'gpu-check'))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    failed = 0
    for check in (check_tests, check_training, check_speed, check_paper_cnn,
                  check_recipe_epochs):
        ok, line = check(args)
        failed += not ok
        print('{} {}'.format('PASS' if ok else 'FAIL', line), flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

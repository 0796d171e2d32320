#!/usr/bin/env python
"""What WAGE's quantized steps do in the seed logs' two settings.

From the weights of a snapshot of a ``--recipe wage-seed`` run (or fresh
weights without one), trains the seed's LeNet-5 for ``--steps`` steps in
each setting, run A (batch 128, randomizer 12 bits) and run B (batch 48,
randomizer 8 bits), both at learning rate 1, and prints a markdown table
of, per setting:

* zero maxima: errors (E) and gradients (G) whose largest magnitude is 0.
  WAGE's :math:`\\mathrm{Shift}(0) = 2^{\\mathrm{round}(\\log_2 0)} = 0`
  makes such a tensor :math:`0/0` = NaN, and the NaN then spreads to every
  weight; here :math:`\\mathrm{Shift}(0) = 1` keeps it 0.
* exact examples: training examples whose output error is exactly 0, and
  those whose softmax, rounded to the errors' grid of :math:`2^{-7}`,
  is exactly the one-hot target (what a quantized softmax output, the
  seed's ``qsoftmax``, gives); with a fraction :math:`p` of such
  examples, a batch of :math:`B` has an all-zero error with probability
  :math:`p^B`, one step in :math:`1/p^B`.
* fewest nonzero E: the fewest nonzero elements of a quantized error
  tensor in any step (and the 1st percentile): how near a step came to
  an all-zero error. An error of 8 bits keeps only the elements above
  :math:`2^{-8}` of the tensor's largest, and the ReLUs and A's clip then
  zero more of what reaches the layer below.
* zero steps: the fraction of weights whose step is 0 (the randomizer's
  rounding of :math:`\\eta \\, g / \\mathrm{Shift}(\\max|g|)` to
  :math:`2^{1-k_R}`, then the stochastic rounding); clipped: the fraction
  of weights on the bounds :math:`\\pm(1 - 2^{-7})`.

    .venv/bin/python bench/wage_statistics.py runs/wage-seed/snapshot_iter_N

A benchmark, not a test: it asserts nothing.
"""
import os
import sys

import numpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from qnn.backends import chainer_compat  # NOQA: E402,F401  (before chainer)
import chainer  # NOQA: E402
import chainer.functions as F  # NOQA: E402

import reference  # NOQA: E402
from qnn import datasets  # NOQA: E402
from qnn.functions import wage_quantizers  # NOQA: E402
from qnn.optimizers import wage_sgd  # NOQA: E402
from qnn.training import options as train_options  # NOQA: E402
import train_mnist  # NOQA: E402

SETTINGS = (('A', 128, 12), ('B', 48, 8))


class Counts(object):
    """Wraps the module functions that quantize errors and steps, and
    counts what they see."""

    def __init__(self):
        self.errors = self.zero_errors = 0
        self.nonzero_errors = []
        self.grads = self.zero_grads = 0
        self.steps = self.zero_steps = 0
        self._error = wage_quantizers.quantize_error
        self._update = wage_sgd.wage_update

    def quantize_error(self, e, bits):
        self.errors += 1
        self.zero_errors += not numpy.abs(e).max()
        q = self._error(e, bits)
        self.nonzero_errors.append(int(numpy.count_nonzero(q)))
        return q

    def wage_update(self, grad, *args, **kwargs):
        self.grads += 1
        self.zero_grads += not numpy.abs(grad).max()
        step = self._update(grad, *args, **kwargs)
        self.steps += step.size
        self.zero_steps += int((step == 0).sum())
        return step

    def __enter__(self):
        wage_quantizers.quantize_error = self.quantize_error
        wage_sgd.wage_update = self.wage_update
        return self

    def __exit__(self, *exc_info):
        wage_quantizers.quantize_error = self._error
        wage_sgd.wage_update = self._update


def build(snapshot, batchsize, randomizer_bits):
    args = train_options.parse_args([
        '--recipe', 'wage-seed', '--batchsize', str(batchsize),
        '--randomizer-bits', str(randomizer_bits)])
    model = train_mnist.build_model(args)
    if snapshot:
        from qnn.training.extensions import snapshots
        snapshots.load_arrays(snapshot, model, 'updater/model:main/')
    optimizer = train_mnist.build_optimizer(args, model)
    return model, optimizer


def exact_fractions(y, t):
    """``(exact outputs, exact rounded softmax)`` of a batch."""
    onehot = numpy.eye(y.shape[1], dtype=y.dtype)[t]
    exact = (y == onehot).all(axis=1).mean()
    p = F.softmax(y).array
    rounded = numpy.floor(p / 2.0 ** -7 + 0.5) * 2.0 ** -7
    return exact, (rounded == onehot).all(axis=1).mean()


def measure(snapshot, train, batchsize, randomizer_bits, steps, seed):
    numpy.random.seed(seed)
    model, optimizer = build(snapshot, batchsize, randomizer_bits)
    x, t = train
    exact = []
    with Counts() as counts:
        for _ in range(steps):
            i = numpy.random.randint(0, len(x), batchsize)
            y = model.predictor(x[i])
            exact.append(exact_fractions(y.array, t[i]))
            loss = model.lossfun(y, t[i])
            model.cleargrads()
            loss.backward()
            optimizer.update()
    bound = 1 - 2.0 ** -7
    weights = numpy.concatenate([p.array.ravel() for p in model.params()])
    exact = numpy.mean(exact, axis=0)
    return {'zero E': '{} / {}'.format(counts.zero_errors, counts.errors),
            'zero G': '{} / {}'.format(counts.zero_grads, counts.grads),
            'exact outputs': exact[0], 'exact softmax': exact[1],
            '1 / p^B': 1 / exact[1] ** batchsize if exact[1] else
            float('inf'),
            'fewest nonzero E': min(counts.nonzero_errors),
            'nonzero E, 1st percentile': float(numpy.percentile(
                counts.nonzero_errors, 1)),
            'zero steps': counts.zero_steps / counts.steps,
            'clipped': (numpy.abs(weights) >= bound).mean()}


def main():
    parser = reference.bench_parser(__doc__)
    parser.add_argument('snapshot', nargs='?', default=None)
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    train, _ = datasets.get_dataset(
        'mnist', **datasets.INPUT_RANGES['symmetric'])
    train = tuple(numpy.asarray(a) for a in
                  chainer.dataset.concat_examples(train))
    rows = [(name, batch, bits, measure(args.snapshot, train, batch, bits,
                                         args.steps, args.seed))
            for name, batch, bits in SETTINGS]
    keys = list(rows[0][3])
    print('# {} steps from {}; {}; {}'.format(
        args.steps, args.snapshot or 'fresh weights', reference.cpu_model(),
        reference.stack()))
    print('| run | batch | randomizer | ' + ' | '.join(keys) + ' |')
    print('|' + '---|' * (3 + len(keys)))
    for name, batch, bits, row in rows:
        print('| {} | {} | {} | '.format(name, batch, bits) + ' | '.join(
            '{:.4g}'.format(v) if isinstance(v, float) else str(v)
            for v in row.values()) + ' |')
    return 0


if __name__ == '__main__':
    sys.exit(main())

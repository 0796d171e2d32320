"""The step size's schedule over the epochs (``--lr-schedule``)."""
from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
from chainer.training import extension
from chainer.training import extensions


def parse_lr_steps(text):
    """``[(epoch, lr)]`` of a ``--lr-steps`` value ``'E:LR,E:LR,...'``;
    raises ``ValueError`` unless the epochs are positive integers in
    increasing order and the step sizes positive finite numbers."""
    steps = []
    for item in text.split(','):
        epoch, sep, lr = item.partition(':')
        try:
            epoch, lr = int(epoch), float(lr)
        except ValueError:
            epoch = None
        if not sep or epoch is None or epoch <= 0 or \
                not 0 < lr < float('inf'):
            raise ValueError('{!r} is not EPOCH:LR with a positive epoch and '
                             'step size'.format(item))
        if steps and epoch <= steps[-1][0]:
            raise ValueError('epochs must increase, got {} after {}'.format(
                epoch, steps[-1][0]))
        steps.append((epoch, lr))
    return steps


class StepSchedule(extension.Extension):

    """Sets the optimizer's ``alpha`` to the value of the epoch:
    ``initial`` before the first step in ``steps`` (``[(epoch, value)]``,
    epochs increasing), then each step's value after its epoch has ended.
    It reads the epoch from the updater, so a resumed run continues the
    schedule without state of its own."""

    trigger = 1, 'epoch'

    def __init__(self, initial, steps, attr='alpha'):
        self.initial = initial
        self.steps = list(steps)
        self.attr = attr

    def value(self, epoch):
        """The value once ``epoch`` epochs have ended."""
        value = self.initial
        for start, v in self.steps:
            if epoch >= start:
                value = v
        return value

    def initialize(self, trainer):
        self(trainer)

    def __call__(self, trainer):
        optimizer = trainer.updater.get_optimizer('main')
        setattr(optimizer, self.attr, self.value(trainer.updater.epoch))


def step_size_schedule(args, epochs):
    """``(extension, trigger)`` that sets the optimizer's ``alpha`` epoch
    by epoch, or ``None`` for a constant step size.

    exponential: alpha of epoch e (1-based) is ``lr * rate ** (e - 1)``,
    the rate taking ``--lr`` to ``--lr-final`` in ``epochs`` epochs (the
    first run's ``--epoch``, so that a resumed run decays at the same rate);
    halving: alpha halves every ``--lr-halving-epochs`` epochs; steps:
    ``--lr``, then the values of ``--lr-steps`` (:class:`StepSchedule`).
    """
    if args.lr_schedule == 'steps':
        return (StepSchedule(args.lr, parse_lr_steps(args.lr_steps)),
                (1, 'epoch'))
    if args.lr_schedule == 'exponential':
        rate = (args.lr_final / args.lr) ** (1.0 / max(1, epochs - 1))
        return (extensions.ExponentialShift('alpha', rate, init=args.lr),
                (1, 'epoch'))
    if args.lr_schedule == 'halving':
        return (extensions.ExponentialShift('alpha', 0.5, init=args.lr),
                (args.lr_halving_epochs, 'epoch'))
    return None

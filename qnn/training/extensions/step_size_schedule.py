"""The step size's schedule over the epochs (``--lr-schedule``)."""
from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
from chainer.training import extensions


def step_size_schedule(args, epochs):
    """``(extension, trigger)`` that sets the optimizer's ``alpha`` epoch
    by epoch, or ``None`` for a constant step size.

    exponential: alpha of epoch e (1-based) is ``lr * rate ** (e - 1)``,
    the rate taking ``--lr`` to ``--lr-final`` in ``epochs`` epochs (the
    first run's ``--epoch``, so that a resumed run decays at the same rate);
    halving: alpha halves every ``--lr-halving-epochs`` epochs.
    """
    if args.lr_schedule == 'exponential':
        rate = (args.lr_final / args.lr) ** (1.0 / max(1, epochs - 1))
        return (extensions.ExponentialShift('alpha', rate, init=args.lr),
                (1, 'epoch'))
    if args.lr_schedule == 'halving':
        return (extensions.ExponentialShift('alpha', 0.5, init=args.lr),
                (args.lr_halving_epochs, 'epoch'))
    return None

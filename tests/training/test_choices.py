"""The choices a run makes by name (qnn.training.choices): each offered on
the command line, each usable by train_mnist.py."""
import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.links as L

from qnn.training import choices
from qnn.training import options as train_options
from qnn.training.extensions import step_size_schedule


def choices_of(option):
    parser = train_options.build_parser()
    action, = [a for a in parser._actions if option in a.option_strings]
    return tuple(action.choices)


def test_the_command_line_offers_every_choice():
    assert set(choices_of('--loss')) == set(choices.LOSSES)
    assert set(choices_of('--optimizer')) == set(choices.OPTIMIZERS)
    assert choices_of('--lr-schedule') == choices.LR_SCHEDULES
    assert choices_of('--adamax-norm') == choices.ADAMAX_NORMS
    assert choices_of('--arch') == choices.ARCHS


def test_every_loss_gives_a_scalar_and_a_gradient():
    y = chainer.Variable(numpy.random.RandomState(0).normal(
        size=(4, 10)).astype(numpy.float32))
    t = numpy.array([0, 3, 9, 1], numpy.int32)
    for name, loss in choices.LOSSES.items():
        value = loss(y, t)
        assert value.shape == (), name
        y.cleargrad()
        value.backward()
        assert numpy.isfinite(y.grad).all() and (y.grad != 0).any(), name


def test_every_optimizer_takes_a_step_size_and_updates():
    for name, optimizer in choices.OPTIMIZERS.items():
        link = L.Linear(3, 2)
        before = link.W.array.copy()
        # WAGE's learning rate multiplies a step of 2^(1 - k_G) whose
        # rounding is stochastic: 1 moves every weight of a nonzero gradient
        opt = optimizer(alpha=1.0 if name == 'wage_sgd' else 2 ** -4)
        opt.setup(link)
        opt.update(lambda: chainer.functions.sum(
            link(numpy.ones((1, 3), numpy.float32)) ** 2))
        assert (link.W.array != before).any(), name


def test_every_schedule_has_its_step_sizes():
    for schedule in choices.LR_SCHEDULES:
        args = train_options.parse_args(
            ['--lr-schedule', schedule, '--epoch', '4'] +
            (['--lr-steps', '2:0.5'] if schedule == 'steps' else []))
        made = step_size_schedule.step_size_schedule(args, args.epoch)
        assert (made is None) == (schedule == 'constant'), schedule

"""The step-size schedules (qnn.training.extensions.step_size_schedule) in runs
of train_mnist.py: exponential decay, halving, resumed."""
import pytest

from qnn.training import options as train_options
from qnn.training.extensions import step_size_schedule
import train_mnist

from helpers import SMALL, read_log


def test_learning_rate_schedule(tmp_path, capsys):
    # exponential: from --lr in the first epoch to --lr-final in the last
    out = tmp_path / 'exp'
    assert train_mnist.main(['--epoch', '3', '--out', str(out), '--noplot',
                             '--lr', '0.01', '--lr-final', '0.0001'] +
                            SMALL) == 0
    alphas = [entry['alpha'] for entry in read_log(out)[1:]]
    assert alphas == pytest.approx([0.01, 0.001, 0.0001])
    out = tmp_path / 'const'
    assert train_mnist.main(['--epoch', '2', '--out', str(out), '--noplot',
                             '--lr-schedule', 'constant'] + SMALL) == 0
    alphas = [entry['alpha'] for entry in read_log(out)[1:]]
    default = train_options.parse_args([]).lr
    assert alphas == [default, default]
    assert 'Adam alpha: {:g} (constant)'.format(default) in \
        capsys.readouterr().out
    # halving: --lr for the first N epochs, then half of it for N, ...
    out = tmp_path / 'halving'
    assert train_mnist.main(['--epoch', '5', '--out', str(out), '--noplot',
                             '--lr', '0.01', '--lr-schedule', 'halving',
                             '--lr-halving-epochs', '2'] + SMALL) == 0
    alphas = [entry['alpha'] for entry in read_log(out)[1:]]
    assert alphas == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])
    assert 'Adam alpha: 0.01, halved every 2 epochs' in \
        capsys.readouterr().out


def test_resumed_halving_schedule_goes_on(tmp_path):
    out = tmp_path / 'result'
    args = ['--noplot', '--out', str(out), '--lr', '0.01', '--lr-schedule',
            'halving', '--lr-halving-epochs', '2'] + SMALL
    assert train_mnist.main(['--epoch', '3'] + args) == 0
    assert train_mnist.main(['--epoch', '5', '--resume', 'auto'] + args) \
        == 0
    alphas = [entry['alpha'] for entry in read_log(out)[1:]]
    assert alphas == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])


WAGE_SMALL = ['--recipe', 'wage-seed', '--train-subset', '256',
              '--test-subset', '100', '--batchsize', '64', '--noplot']


def test_steps_schedule_in_a_run_and_resumed(tmp_path, capsys):
    out = tmp_path / 'result'
    args = WAGE_SMALL + ['--out', str(out), '--lr', '2',
                         '--lr-steps', '2:1,3:0.5']
    assert train_mnist.main(['--epoch', '2'] + args) == 0
    assert 'WageSGD alpha: 2, then 1 after epoch 2, 0.5 after epoch 3' in \
        capsys.readouterr().out
    assert train_mnist.main(['--epoch', '4', '--resume', 'auto'] + args) \
        == 0
    alphas = [entry['alpha'] for entry in read_log(out)[1:]]
    assert alphas == [2, 2, 1, 0.5]


@pytest.mark.parametrize('text', ['75:0.5', '1:2,5:0.5,6:0.25'])
def test_parse_lr_steps(text):
    steps = step_size_schedule.parse_lr_steps(text)
    assert ','.join('{}:{:g}'.format(e, lr) for e, lr in steps) == text


@pytest.mark.parametrize('text', ['', '75', '0:1', '5:0', '5:-1', 'a:1',
                                  '5:1,5:2', '6:1,5:2', '5:inf', '5:nan'])
def test_bad_lr_steps(text):
    with pytest.raises(ValueError):
        step_size_schedule.parse_lr_steps(text)


def test_step_schedule_values():
    schedule = step_size_schedule.StepSchedule(1.0, [(75, 0.5)])
    assert [schedule.value(e) for e in (0, 74, 75, 149)] == [1, 1, 0.5, 0.5]

"""The step-size schedules (qnn.training.extensions.step_size_schedule) in runs
of train_mnist.py: exponential decay, halving, resumed."""
import pytest

from qnn.training import options as train_options
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

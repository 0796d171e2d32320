"""The command line of train_mnist.py (qnn.training.options): bad values exit 2
with argparse's line, recipes are defaults that options override, sizes
beyond the machine's memory are refused."""
import pytest

from qnn.training import options as train_options
import train_mnist

from helpers import ROOT


@pytest.mark.parametrize('args, message', [
    (['--batchsize', '0'], 'must be a positive integer, got 0'),
    (['--batchsize', '-5'], 'must be a positive integer, got -5'),
    (['--batchsize', '1.5'], "'1.5' is not an integer"),
    (['--epoch', '0'], 'must be a positive integer'),
    (['--epoch', 'ten'], "'ten' is not an integer"),
    (['--unit', '0'], 'must be a positive integer'),
    (['--frequency', '0'], 'must be a positive integer'),
    (['--frequency', 'x'], "'x' is not an integer"),
    (['--lr', '-1'], 'must be a positive number'),
    (['--lr', 'nan'], 'must be a positive number'),
    (['--gpu', 'x'], "invalid int value: 'x'"),
    (['--seed', '-1'], 'must be between 0 and 2**32 - 1, got -1'),
    (['--lr-schedule', 'cosine'], 'invalid choice'),
    (['--resume', '/nonexistent/snapshot'], 'no such file'),
    (['--weight-bits', '0'], 'must be between 1 and 32 bits'),
    (['--weight-bits', '-2'], 'must be between 1 and 32 bits'),
    (['--activation-bits', '33'], 'must be between 1 and 32 bits'),
    (['--activation-bits', '2.5'], "'2.5' is not an integer"),
    (['--gradient-bits', '1'], 'must be between 2 and 32 bits'),
    (['--error-bits', 'six'], "'six' is not an integer"),
    (['--quantizer', 'ternary'], 'invalid choice'),
    (['--resume', ROOT], 'not a file'),
    (['--snapshot-keep', '0'], 'must be a positive integer, got 0'),
    (['--train-subset', '0'], 'must be a positive integer, got 0'),
    (['--test-subset', '-3'], 'must be a positive integer, got -3'),
    (['--unit', '1e3'], "'1e3' is not an integer"),
    (['--epoch', ''], "'' is not an integer"),
    (['--eval-batchsize', '0'], 'must be a positive integer, got 0'),
    (['--random-shift', '-1'], 'must be 0 or more, got -1'),
    (['--bn-population', '-1'], 'must be 0 or more, got -1'),
    (['--bn-population', '99'], '--bn-population 99: at least one '
                                'minibatch (--batchsize 100) or 0'),
    (['--bn-population', '100', '--communicator', 'naive'],
     '--bn-population: single-process runs only'),
    # sizes beyond the memory of any machine here, refused before anything
    # is allocated
    (['--unit', '100000000'], '--unit 100000000 --layers 2: the network '
                              'needs at least'),
    (['--layers', '100000'], '--unit 1000 --layers 100000: the network '
                             'needs at least'),
])
def test_bad_arguments_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        train_mnist.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith('usage:')


def test_recipe_values_are_defaults_that_options_override():
    args = train_options.parse_args(['--recipe', 'binarynet-theano',
                                     '--unit', '64', '--input-dropout', '0'])
    assert (args.unit, args.layers, args.loss) == (64, 3, 'squared_hinge')
    assert (args.input_dropout, args.hidden_dropout) == (0.0, 0.5)
    assert args.glorot_step_sizes and args.validation == 10000
    assert (args.weight_init, args.input_range) == ('uniform', 'symmetric')
    args = train_options.parse_args(['--recipe', 'binarynet-theano',
                                     '--weight-init', 'lecun-normal'])
    assert args.weight_init == 'lecun-normal'
    args = train_options.parse_args(['--recipe', 'binarynet-torch'])
    assert args.stochastic_activations and not args.stochastic_weights
    args = train_options.parse_args(['--recipe', 'binarynet-torch',
                                     '--no-stochastic-activations',
                                     '--stochastic-weights'])
    assert not args.stochastic_activations and args.stochastic_weights
    assert args.optimizer == 'shift_adamax'
    for options, rounded in (([], True), (['--adamax-norm', 'decaying'],
                                          False)):
        args = train_options.parse_args(['--recipe', 'binarynet-torch'] +
                                        options)
        model = train_mnist.build_model(args)
        optimizer = train_mnist.build_optimizer(args, model)
        assert optimizer.round_norm is rounded
    assert vars(train_options.parse_args([])) == vars(
        train_options.parse_args(['--recipe', 'default']))


def test_help_lists_what_each_recipe_sets(capsys):
    with pytest.raises(SystemExit):
        train_options.parse_args(['--help'])
    out = capsys.readouterr().out
    for name in ('default', 'binarynet-theano', 'binarynet-torch'):
        assert '  {}: '.format(name) in out
    assert 'hidden_dropout=0.5' in out
    torch, = [line for line in out.splitlines()
              if line.startswith('  binarynet-torch: ')]
    assert 'stochastic_activations=True, stochastic_weights=False' in torch


@pytest.mark.parametrize('option', ['--stochastic', '--no-stochastic'])
def test_one_stochastic_switch_for_both_is_gone(option, capsys):
    # weights and activations have one switch each: the old option is an
    # ambiguous prefix of both
    with pytest.raises(SystemExit) as e:
        train_options.parse_args([option])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'ambiguous option: {} could match'.format(option) in err
    assert '{}-activations'.format(option) in err
    assert '{}-weights'.format(option) in err


def test_unknown_input_range(capsys):
    with pytest.raises(SystemExit) as e:
        train_options.parse_args(['--input-range', 'signed'])
    assert e.value.code == 2
    assert "invalid choice: 'signed'" in capsys.readouterr().err


@pytest.mark.parametrize('args, reason', [
    (['--arch', 'transformer'], "argument --arch: invalid choice"),
    (['--dataset', 'svhn'], "argument --dataset: invalid choice"),
    (['--arch', 'cnn', '--unit', '50'], '--arch cnn: --unit set the MLP'),
    (['--arch', 'cnn', '--recipe', 'binarynet-theano'], '--arch cnn: '),
])
def test_bad_arch_or_dataset_exit_2(capsys, args, reason):
    with pytest.raises(SystemExit) as e:
        train_options.parse_args(args)
    assert e.value.code == 2
    assert reason in capsys.readouterr().err

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

import net
from qnn.training import options as train_options
from qnn.training import recipes
import train_mnist


def test_all_recipes_set_the_same_options():
    keys = set(recipes.RECIPES['default'])
    for name, recipe in recipes.RECIPES.items():
        assert set(recipe) == keys, name


def test_default_recipe_is_the_options_defaults():
    args = vars(train_options.parse_args([]))
    for key, value in recipes.RECIPES['default'].items():
        assert args[key] == value, key


@pytest.mark.parametrize('dataset', ['mnist', 'fashion-mnist'])
@pytest.mark.parametrize('name', sorted(recipes.RECIPES))
def test_recipe_values_are_what_its_options_parse_to(name, dataset):
    parser = train_options.build_parser()
    actions = {action.dest: action for action in parser._actions}
    recipe = recipes.get_recipe(name, dataset)
    args = vars(train_options.parse_args(['--recipe', name, '--dataset',
                                          dataset]))
    for key, value in recipe.items():
        assert args[key] == value, key
        if actions[key].choices is not None:
            assert value in actions[key].choices, key


@pytest.mark.parametrize('name', sorted(recipes.RECIPES))
def test_networks_build_and_run(name):
    argv = ['--recipe', name]
    if recipes.RECIPES[name]['arch'] == 'mlp':
        argv += ['--unit', '8']
    args = train_options.parse_args(argv)
    model = train_mnist.build_model(args).predictor
    if args.arch == 'mlp':
        names = [n for n, _ in model.namedlinks(skipself=True)]
        assert len(names) == 2 * (args.layers + 1)
    y = model(numpy.random.RandomState(0).uniform(0, 1, (2, 784))
              .astype('f'))
    assert y.shape == (2, 10)


def test_default_network_is_the_plain_mlp():
    numpy.random.seed(1)
    a = net.MnistMLP(784, 8, 10)
    numpy.random.seed(1)
    b = train_mnist.build_model(
        train_options.parse_args(['--unit', '8'])).predictor
    x = numpy.random.RandomState(0).uniform(0, 1, (5, 784)).astype('f')
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(a(x).array, b(x).array)


def test_binarized_cnn_is_the_options_that_reached_the_targets():
    # docs/results.md: the wide CNN, Glorot step sizes, BN population
    # statistics over 10,000 images; on MNIST shifts of up to 2 pixels
    measured = ['--arch', 'cnn', '--cnn-size', 'wide', '--glorot-step-sizes',
                '--bn-population', '10000']

    def options(argv):
        args = vars(train_options.parse_args(argv))
        del args['recipe']
        return args
    assert options(['--recipe', 'binarized-cnn']) == options(
        measured + ['--random-shift', '2'])
    fashion = ['--dataset', 'fashion-mnist']
    assert options(['--recipe', 'binarized-cnn'] + fashion) == options(
        measured + fashion)
    # explicit options win, per data set too
    assert train_options.parse_args(
        ['--recipe', 'binarized-cnn', '--random-shift', '1']
    ).random_shift == 1


def test_paper_values():
    theano = recipes.RECIPES['binarynet-theano']
    assert (theano['unit'], theano['layers']) == (4096, 3)
    assert (theano['input_dropout'], theano['hidden_dropout']) == (0.2, 0.5)
    assert (theano['bn_eps'], 1 - theano['bn_decay']) == (1e-4,
                                                          pytest.approx(0.1))
    assert not theano['stochastic_activations']
    assert not theano['stochastic_weights']
    # Train-time/mnist.py feeds 2 * X - 1
    assert theano['input_range'] == 'symmetric'
    # both codes draw the binary weights from U(-1, 1)
    assert theano['weight_init'] == 'uniform'
    assert recipes.RECIPES['binarynet-torch']['weight_init'] == 'uniform'
    torch = recipes.RECIPES['binarynet-torch']
    assert (torch['unit'], torch['optimizer'], torch['bn']) == (
        2048, 'shift_adamax', 'shift')
    # stochastic binarization of the activations, deterministic weights
    assert torch['stochastic_activations']
    assert not torch['stochastic_weights']
    # Main_BinaryNet_MNIST.lua and BatchNormalizationShiftPow2's defaults
    assert (torch['lr'], torch['lr_schedule']) == (2.0 ** -6, 'halving')
    assert (torch['bn_eps'], 1 - torch['bn_decay']) == (1e-5, 0.125)
    assert torch['adamax_norm'] == 'rounded'


def test_get_recipe_copies_and_checks():
    recipe = recipes.get_recipe('default')
    recipe['unit'] = 1
    assert recipes.RECIPES['default']['unit'] == 1000
    with pytest.raises(ValueError):
        recipes.get_recipe('binarynet')
    assert recipes.describe('default').startswith(
        'default: activation_bits=1, adamax_norm=decaying, arch=mlp, '
        'batchsize=100')
    assert 'random_shift=2 on mnist, 0 otherwise' in recipes.describe(
        'binarized-cnn')

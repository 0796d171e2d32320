import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

import net
from qnn.training import options as train_options
from qnn.training import recipes


def test_all_recipes_set_the_same_options():
    keys = set(recipes.RECIPES['default'])
    for name, recipe in recipes.RECIPES.items():
        assert set(recipe) == keys, name


def test_default_is_todays_trainer():
    args = vars(train_options.parse_args([]))
    default = recipes.RECIPES['default']
    existing = {k for k in default if k in args}
    # the options the trainer has today take today's defaults
    assert existing >= {'unit', 'epoch', 'batchsize', 'lr', 'lr_final',
                        'lr_schedule', 'stochastic_activations',
                        'stochastic_weights'}
    for key in existing:
        assert default[key] == args[key], key
    # every other key is a new option, whose default is the default recipe's
    for key in set(default) - existing:
        assert key in recipes.NEW_OPTIONS, key
        assert recipes.NEW_OPTIONS[key][1] == default[key], key
    assert set(recipes.NEW_OPTIONS) <= set(default)


def test_new_option_values_have_the_declared_types_and_choices():
    for recipe in recipes.RECIPES.values():
        for key, (kind, _, choices, _) in recipes.NEW_OPTIONS.items():
            assert isinstance(recipe[key], kind), key
            if choices is not None:
                assert recipe[key] in choices, key


@pytest.mark.parametrize('name', sorted(recipes.RECIPES))
def test_networks_build_and_run(name):
    recipe = recipes.get_recipe(name)
    model = net.MnistMLP(12, 8, 3, **recipes.net_kwargs(recipe))
    names = [n for n, _ in model.namedlinks(skipself=True)]
    assert len(names) == 2 * (recipe['layers'] + 1)
    y = model(numpy.random.RandomState(0).uniform(0, 1, (5, 12))
              .astype('f'))
    assert y.shape == (5, 3)


def test_default_network_is_todays():
    numpy.random.seed(1)
    a = net.MnistMLP(12, 8, 3)
    numpy.random.seed(1)
    b = net.MnistMLP(12, 8, 3,
                     **recipes.net_kwargs(recipes.get_recipe('default')))
    x = numpy.random.RandomState(0).uniform(0, 1, (5, 12)).astype('f')
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(a(x).array, b(x).array)


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
        'default: adamax_norm=decaying, batchsize=100')

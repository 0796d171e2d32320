"""Named option bundles: today's default and the paper's two MNIST recipes.

Data only, for ``train_mnist.py --recipe NAME``: each recipe maps option
names to values, the names being the ``dest`` of the trainer's argparse
options (``unit``, ``epoch``, ``lr``, ... exist today; :data:`NEW_OPTIONS`
lists those the trainer still has to add). Explicit command-line options
override a recipe's values. docs/recipes.md explains every value and where
it comes from.
"""
import copy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)

# The options a recipe sets that train_mnist.py does not have yet:
# name -> (type, default, choices or None, help). The defaults are today's
# behaviour, i.e. RECIPES['default'].
NEW_OPTIONS = {
    'layers': (int, 2, None,
               'number of hidden layers (MnistMLP n_layers)'),
    'loss': (str, 'softmax_cross_entropy',
             ('softmax_cross_entropy', 'squared_hinge'),
             'softmax_cross_entropy, or squared_hinge.squared_hinge (mean '
             'over all N*K terms, targets 2*onehot-1)'),
    'input_dropout': (float, 0.0, None,
                      'dropout ratio of the input pixels, in [0, 1)'),
    'hidden_dropout': (float, 0.0, None,
                       'dropout ratio of the binarized hidden activations, '
                       'in [0, 1)'),
    'bn': (str, 'standard', ('standard', 'shift'),
           'standard: chainer.links.BatchNormalization; shift: '
           'link_shift_batch_normalization.ShiftBatchNormalization'),
    'bn_eps': (float, 2e-5, None, 'epsilon of every batch normalization'),
    'bn_decay': (float, 0.9, None,
                 'decay of the running BN statistics (Lasagne/Torch '
                 'momentum = 1 - decay)'),
    'glorot_step_sizes': (bool, False, None,
                          'scale each binarized layer\'s step size by '
                          '1/sqrt(1.5/(fan_in+fan_out)) '
                          '(step_sizes.scale_step_sizes)'),
    'optimizer': (str, 'adam', ('adam', 'shift_adamax'),
                  'adam: inplace_adam.InplaceAdam; shift_adamax: '
                  'shift_adamax.ShiftAdaMax (alpha = --lr)'),
    'weight_init': (str, 'lecun-normal', ('lecun-normal', 'uniform'),
                    'initializer of the quantized weights '
                    '(net.weight_initializer)'),
    'input_range': (str, 'unit', ('unit', 'symmetric'),
                    'unit: pixels in [0, 1]; symmetric: in [-1, 1] '
                    '(datasets.INPUT_RANGES)'),
    'adamax_norm': (str, 'decaying', ('decaying', 'rounded'),
                    'shift_adamax\'s infinity norm: decaying (the paper) or '
                    'rounded (stored as a power of two, never decays: '
                    'BinaryNet\'s Torch7 code)'),
    'validation': (int, 0, None,
                   'hold out the last N training images for validation '
                   '(0: none)'),
}

RECIPES = {
    # today's train_mnist.py, unchanged
    'default': {
        'unit': 1000, 'layers': 2, 'epoch': 20, 'batchsize': 100,
        'lr': 1e-3, 'lr_final': 1e-5, 'lr_schedule': 'exponential',
        'optimizer': 'adam', 'glorot_step_sizes': False,
        'loss': 'softmax_cross_entropy',
        'input_dropout': 0.0, 'hidden_dropout': 0.0,
        'bn': 'standard', 'bn_eps': 2e-5, 'bn_decay': 0.9,
        'stochastic_activations': False, 'stochastic_weights': False,
        'weight_init': 'lecun-normal', 'input_range': 'unit',
        'adamax_norm': 'decaying', 'validation': 0,
    },
    # Courbariaux, Hubara et al. 2016, Theano/Lasagne MLP: 0.96 % test error
    # at the epoch of best validation error
    'binarynet-theano': {
        'unit': 4096, 'layers': 3, 'epoch': 1000, 'batchsize': 100,
        'lr': 3e-3, 'lr_final': 3e-7, 'lr_schedule': 'exponential',
        'optimizer': 'adam', 'glorot_step_sizes': True,
        'loss': 'squared_hinge',
        'input_dropout': 0.2, 'hidden_dropout': 0.5,
        'bn': 'standard', 'bn_eps': 1e-4, 'bn_decay': 0.9,
        'stochastic_activations': False, 'stochastic_weights': False,
        # Train-time/mnist.py: H = 1, so W ~ U(-1, 1); inputs 2 * X - 1
        'weight_init': 'uniform', 'input_range': 'symmetric',
        'adamax_norm': 'decaying', 'validation': 10000,
    },
    # the Torch7 MLP: 1.40 % test error; the values of BinaryNet's Torch7
    # code (Main_BinaryNet_MNIST.lua, Models/BinaryNet_MNIST_Model.lua),
    # the epochs and the validation split the paper's (docs/recipes.md)
    'binarynet-torch': {
        'unit': 2048, 'layers': 3, 'epoch': 1000, 'batchsize': 100,
        # Main_BinaryNet_MNIST.lua: LR 2^-6, halved every 20 epochs
        'lr': 2.0 ** -6, 'lr_final': None, 'lr_schedule': 'halving',
        'optimizer': 'shift_adamax', 'glorot_step_sizes': True,
        'loss': 'squared_hinge',
        'input_dropout': 0.0, 'hidden_dropout': 0.0,
        # BatchNormalizationShiftPow2's defaults: eps 1e-5, momentum 0.125
        'bn': 'shift', 'bn_eps': 1e-5, 'bn_decay': 0.875,
        'stochastic_activations': True, 'stochastic_weights': False,
        # BinaryLinear.lua: weight:uniform(-1, 1); adaMax_binary_clip_shift
        # stores the norm rounded
        'weight_init': 'uniform', 'input_range': 'unit',
        'adamax_norm': 'rounded', 'validation': 10000,
    },
}

# MnistMLP's argument for each recipe key that configures the network
NET_ARGUMENTS = {
    'layers': 'n_layers', 'input_dropout': 'input_dropout',
    'hidden_dropout': 'hidden_dropout', 'bn': 'bn', 'bn_eps': 'bn_eps',
    'bn_decay': 'bn_decay',
    'stochastic_activations': 'stochastic_activations',
    'stochastic_weights': 'stochastic_weights', 'weight_init': 'weight_init',
}


def get_recipe(name):
    """A copy of the recipe ``name`` (a key of :data:`RECIPES`)."""
    if name not in RECIPES:
        raise ValueError('unknown recipe {!r}; choose from {}'.format(
            name, ', '.join(sorted(RECIPES))))
    return copy.deepcopy(RECIPES[name])


def net_kwargs(recipe):
    """The keyword arguments of :class:`net.MnistMLP` in ``recipe``."""
    return {NET_ARGUMENTS[k]: v for k, v in recipe.items()
            if k in NET_ARGUMENTS}


def describe(name):
    """One line listing what recipe ``name`` sets, for ``--help``."""
    return '{}: {}'.format(name, ', '.join(
        '{}={}'.format(k, v) for k, v in sorted(RECIPES[name].items())))

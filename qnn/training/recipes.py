"""Named option bundles: the default, the paper's two MNIST recipes and the
binarized ConvNet that reaches the CNN targets.

Data only, for ``train_mnist.py --recipe NAME``: each recipe maps option
names (the ``dest`` of the trainer's argparse options) to values, and
every recipe sets the same options. The default recipe's values are the
options' defaults (:func:`qnn.training.options.build_parser` takes them from
here); explicit command-line options override a recipe's values. A value
may depend on the data set (:class:`PerDataset`). docs/recipes.md explains
every value and where it comes from.
"""
import copy

from qnn.functions.batch_normalization_sign import DEFAULT_EPS


class PerDataset(object):
    """A recipe value that depends on ``--dataset``: ``values[name]`` for
    the data sets named there, ``default`` for the others."""

    def __init__(self, values, default):
        self.values = dict(values)
        self.default = default

    def on(self, dataset):
        return self.values.get(dataset, self.default)

    def __repr__(self):
        return ', '.join(['{} on {}'.format(v, k) for k, v in sorted(
            self.values.items())] + ['{} otherwise'.format(self.default)])


RECIPES = {
    # train_mnist.py without --recipe
    'default': {
        'unit': 1000, 'layers': 2, 'epoch': 20, 'batchsize': 100,
        'lr': 1e-3, 'lr_final': 1e-5, 'lr_schedule': 'exponential',
        'optimizer': 'adam', 'glorot_step_sizes': False,
        'loss': 'softmax_cross_entropy',
        'input_dropout': 0.0, 'hidden_dropout': 0.0,
        'bn': 'standard', 'bn_eps': DEFAULT_EPS, 'bn_decay': 0.9,
        'stochastic_activations': False, 'stochastic_weights': False,
        'weight_init': 'lecun-normal', 'input_range': 'unit',
        'adamax_norm': 'decaying', 'validation': 0,
        'arch': 'mlp', 'cnn_size': 'small', 'random_shift': 0,
        'bn_population': 0, 'wage_net': 'seed', 'lr_steps': None,
        'weight_bits': 1, 'activation_bits': 1, 'gradient_bits': 32,
        'error_bits': 32, 'randomizer_bits': 16,
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
        'arch': 'mlp', 'cnn_size': 'small', 'random_shift': 0,
        'bn_population': 0, 'wage_net': 'seed', 'lr_steps': None,
        'weight_bits': 1, 'activation_bits': 1, 'gradient_bits': 32,
        'error_bits': 32, 'randomizer_bits': 16,
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
        'arch': 'mlp', 'cnn_size': 'small', 'random_shift': 0,
        'bn_population': 0, 'wage_net': 'seed', 'lr_steps': None,
        'weight_bits': 1, 'activation_bits': 1, 'gradient_bits': 32,
        'error_bits': 32, 'randomizer_bits': 16,
    },
}
# the wide binarized ConvNet with Glorot step sizes and BN population
# statistics, the options that reached a mean final test accuracy of 0.9924
# on MNIST and 0.9066 on Fashion-MNIST (3 seeds, 20 epochs; docs/results.md);
# the MNIST runs also moved the training images by up to 2 pixels
RECIPES['binarized-cnn'] = dict(
    RECIPES['default'], arch='cnn', cnn_size='wide',
    glorot_step_sizes=True, bn_population=10000,
    random_shift=PerDataset({'mnist': 2}, 0))


# WAGE (Wu et al. 2018): no BN, weights, activations, gradients and
# errors quantized (net.WageLeNet5, qnn.optimizers.wage_sgd.WageSGD),
# squared-error loss, pixels in [-1, 1] as WAGE's (X / 127.5 - 1)
WAGE_COMMON = dict(
    RECIPES['default'], arch='wage', optimizer='wage_sgd',
    loss='sum_squared_error', input_range='symmetric', lr=1.0,
    lr_final=None, lr_schedule='steps', gradient_bits=8, error_bits=8)
# the seed logs' run A: their Keras LeNet-5 at W1 A2 G8 E8, randomizer 12
# bits, batch 128, 150 epochs, learning rate 1 halved after epoch 75 (test
# accuracy 0.9254 in the log); docs/wage.md
# (their network ends in a softmax trained by squared error: 3.5 times
# fewer errors than the raw outputs' squared error after 4 epochs)
RECIPES['wage-seed'] = dict(
    WAGE_COMMON, wage_net='seed', loss='softmax_sum_squared_error',
    weight_bits=1, activation_bits=2,
    randomizer_bits=12, batchsize=128, epoch=150, lr_steps='75:0.5')
# WAGE's MNIST LeNet-5 at 2-8-8-8 bits, as its log of 2017-10-23 (lenet5
# 2888): randomizer 16 bits, batch 128, LR 8, 1 after epoch 200, 1/8 after
# epoch 250, 300 epochs
RECIPES['wage'] = dict(
    WAGE_COMMON, wage_net='wage', weight_bits=2, activation_bits=8,
    randomizer_bits=16, batchsize=128, epoch=300, lr=8.0,
    lr_steps='200:1,250:0.125')


def get_recipe(name, dataset='mnist'):
    """A copy of the recipe ``name`` (a key of :data:`RECIPES`) for the data
    set ``dataset``: plain values, :class:`PerDataset` ones resolved."""
    if name not in RECIPES:
        raise ValueError('unknown recipe {!r}; choose from {}'.format(
            name, ', '.join(sorted(RECIPES))))
    return {key: value.on(dataset) if isinstance(value, PerDataset)
            else copy.deepcopy(value) for key, value in RECIPES[name].items()}


def describe(name):
    """One line listing what recipe ``name`` sets, for ``--help``."""
    return '{}: {}'.format(name, ', '.join(
        '{}={}'.format(k, v) for k, v in sorted(RECIPES[name].items())))

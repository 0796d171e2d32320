"""The command line of ``train_mnist.py``: its options, types and checks.

:func:`parse_args` returns the options as ``argparse.Namespace``; a bad value
ends the program with argparse's one line and exit status 2.
"""
import argparse
import json
import os

import net
from qnn import datasets
from qnn.training import choices
from qnn.training import multi_node
from qnn.training import option_types
from qnn.training import recipes
from qnn.utils import errors
import qst

# options of net.MnistMLP that net.BinaryConvNet does not have
MLP_ONLY = ('unit', 'layers', 'input_dropout', 'hidden_dropout', 'bn',
            'bn_eps', 'bn_decay')
RECIPE_HELP = 'recipes (--recipe NAME sets these; explicit options win):\n' + \
    '\n'.join('  ' + recipes.describe(name)
              for name in sorted(recipes.RECIPES))


def parse_args(argv=None):
    """The options of ``argv``; a ``--recipe``'s values are the defaults
    that explicit options override."""
    parser = build_parser()
    known, _ = _recipe_parser().parse_known_args(argv)
    parser.set_defaults(**recipes.get_recipe(known.recipe, known.dataset))
    args = parser.parse_args(argv)
    args.device = str(args.device)
    problem = combination_problem(args)
    if problem:
        parser.error(problem)
    return args


def combination_problem(args):
    """What is wrong with the options ``args`` together (each alone being
    valid), or ``None``."""
    if args.arch != 'mlp':
        plain = build_parser()
        mlp_only = [name for name in MLP_ONLY
                    if getattr(args, name) != plain.get_default(name)]
        if mlp_only:
            return '--arch {}: {} set the MLP only'.format(args.arch, ', '.join(
                '--' + name.replace('_', '-') for name in mlp_only))
    if args.arch == 'wage' and (args.quantizer != 'linear' or
                                args.stochastic_weights or
                                args.stochastic_activations):
        return '--arch wage quantizes with WAGE\'s own grids: leave out ' \
            '--quantizer, --stochastic-weights and --stochastic-activations'
    if (args.lr_schedule == 'steps') != (args.lr_steps is not None):
        return '--lr-schedule steps goes with --lr-steps, and only it'
    if args.bn_population and args.bn_population < args.batchsize:
        return '--bn-population {}: at least one minibatch (--batchsize {}) ' \
            'or 0'.format(args.bn_population, args.batchsize)
    if args.bn_population and args.communicator is not None:
        return '--bn-population: single-process runs only (each rank holds ' \
            'another part of the training set)'
    if args.communicator in multi_node.GPU_COMMUNICATORS and \
            args.device != '-1':
        return '--communicator {} gives each process the GPU of its local ' \
            'rank; leave out --device/--gpu'.format(args.communicator)
    return memory_problem(args)


def memory_problem(args, available=None):
    """Why the MLP of ``args`` cannot fit in ``available`` bytes (this
    machine's memory), or ``None``: checked before anything is allocated.
    A lower bound, in float32: each weight held six times (itself, its
    quantized copy, its gradient, Adam's two moments, the update's
    scratch), each hidden activation of a minibatch eight times (the
    layer's output, its batch normalization, sign and their gradients).
    The ConvNets have fixed sizes."""
    if args.arch != 'mlp':
        return None
    info = datasets.get_info(args.dataset)
    weights = args.unit * (info.in_size + (args.layers - 1) * args.unit +
                           info.n_classes)
    activations = max(args.batchsize, args.eval_batchsize) * args.unit * \
        args.layers
    need = 4 * (6 * weights + 8 * activations)
    available = available or _physical_memory()
    if need <= available:
        return None
    return '--unit {} --layers {}: the network needs at least {:.3g} GB, ' \
        'more than the {:.3g} GB of this machine'.format(
            args.unit, args.layers, need / 1e9, available / 1e9)


def _physical_memory():
    try:
        return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: no limit


class RecordError(ValueError):
    """A recorded option is not one train_mnist.py could have taken; the
    message names it."""


# option types whose values are numbers (the others take strings)
_NUMBER_TYPES = (option_types.integer, option_types.positive_int,
                 option_types.non_negative_int, option_types.seed,
                 option_types.frequency, option_types.number,
                 option_types.positive_float, option_types.fraction,
                 option_types.bits, option_types.gradient_bits,
                 option_types.randomizer_bits)
_FLAGS = (argparse._StoreTrueAction, argparse._StoreFalseAction,
          argparse.BooleanOptionalAction)


def options_of_record(record, ignored=()):
    """The options of a run as its record (``config.json``, in today's
    names) holds them, each checked as the command line checks it, with
    its recipe's defaults for those it lacks; raises :class:`RecordError`
    naming the first bad one. Keys in ``ignored`` (what a record holds
    beside the options) are skipped."""
    recipe = record.get('recipe', 'default')
    dataset = record.get('dataset', 'mnist')
    if recipe not in recipes.RECIPES or dataset not in datasets.NAMES:
        raise RecordError('recipe {!r} and dataset {!r} are not among this '
                          'program\'s'.format(recipe, dataset))
    parser = build_parser()
    parser.set_defaults(**recipes.get_recipe(recipe, dataset))
    args = parser.parse_args([])
    actions = {}
    for action in parser._actions:  # --device before --gpu, its alias
        actions.setdefault(action.dest, action)
    for name, value in sorted(record.items()):
        if name in ignored:
            continue
        if name not in actions or name == 'help':
            raise RecordError('unknown option {!r}'.format(name))
        problem = _value_problem(actions[name], value,
                                 parser.get_default(name))
        if problem:
            raise RecordError('{} is {}: {}'.format(
                actions[name].option_strings[0], json.dumps(value)[:40],
                problem))
        setattr(args, name, value)
    problem = combination_problem(args)
    if problem:
        raise RecordError(problem)
    return args


def _value_problem(action, value, default):
    """Why ``value`` is not one ``action`` could have stored, or None."""
    if value is None:
        return None if default is None else 'not a value'
    if isinstance(action, _FLAGS):
        return None if isinstance(value, bool) else 'not true or false'
    if action.choices is not None:
        return None if isinstance(value, str) and value in action.choices \
            else 'not one of {}'.format(', '.join(map(str, action.choices)))
    if action.type in _NUMBER_TYPES:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return 'not a number'
        try:
            action.type(repr(value))
        except argparse.ArgumentTypeError as e:
            return str(e)
        return None
    return None if isinstance(value, str) else 'not a string'


def _recipe_parser():
    # what the recipe's values depend on, read before the full parse
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--recipe', choices=sorted(recipes.RECIPES),
                        default='default')
    parser.add_argument('--dataset', default='mnist')
    return parser


def build_parser():
    """The parser of train_mnist.py's options; the options a recipe sets
    take the default recipe's values as their defaults."""
    parser = argparse.ArgumentParser(
        description='Binarized neural network (Hubara et al. 2016): '
                    'MNIST MLP in Chainer',
        epilog=RECIPE_HELP + '\n\n' + errors.EXIT_STATUS_HELP,
        formatter_class=option_types.HelpFormatter)
    _add_run_options(parser)
    _add_network_and_data_options(parser)
    _add_step_size_options(parser)
    _add_run_size_options(parser)
    _add_quantization_options(parser.add_argument_group(
        'quantization', 'bit widths: 1 is binarization (sign), 32 is full '
        'precision (no rounding; activations still clipped to [-1, 1])'))
    group = parser.add_argument_group(
        'recipe', 'the pieces of the paper\'s MNIST recipes (docs/recipes.md)')
    _add_recipe_network_options(group)
    _add_recipe_training_options(group)
    _add_recipe_data_options(group)
    group = parser.add_argument_group('deprecated arguments')
    group.add_argument('--gpu', '-g', dest='device', type=int, nargs='?',
                       const=0, help='GPU ID (negative value indicates CPU)')
    parser.set_defaults(**recipes.get_recipe('default'))
    return parser


def _add_run_options(parser):
    parser.add_argument('--batchsize', '-b', type=option_types.positive_int,
                        help='Number of images in each mini-batch')
    parser.add_argument('--epoch', '-e', type=option_types.positive_int,
                        help='Number of sweeps over the dataset to train')
    parser.add_argument('--frequency', '-f', type=option_types.frequency,
                        default=1,
                        help='Frequency of taking a snapshot, in epochs '
                             '(-1: only at the end); the last epoch always '
                             'gets one')
    parser.add_argument('--device', '-d', type=str, default='-1',
                        help='Device specifier: -1 or @numpy (CPU), '
                             '0 or @cupy:0 (GPU 0), native:0 (ChainerX)')
    parser.add_argument('--out', '-o', default='result',
                        help='Directory to output the result')
    parser.add_argument('--replace-out', action='store_true',
                        help='Delete the files of another run in --out '
                             'before writing this one\'s (without it, such '
                             'a directory is refused)')
    parser.add_argument('--resume', '-r', type=option_types.snapshot_path,
                        metavar='SNAPSHOT',
                        help='Resume the training from a snapshot file, or '
                             '"auto": from the newest complete snapshot in '
                             '--out (starting afresh if there is none)')


def _add_network_and_data_options(parser):
    parser.add_argument('--arch', choices=choices.ARCHS,
                        help='mlp: net.MnistMLP; cnn: net.BinaryConvNet '
                             '(convolution, max pooling, BN, sign); wage: '
                             'net.WageLeNet5 (no BN, WAGE\'s quantizers)')
    parser.add_argument('--wage-net', choices=tuple(net.WAGE_NETWORKS),
                        help='WageLeNet5 setting: seed (6C5-MP2-8C5-MP2-'
                             '120FC-84FC-10) or wage (32C5-MP2-64C5-MP2-'
                             '512FC-10)')
    parser.add_argument('--cnn-size', choices=tuple(net.ARCHITECTURES),
                        help='BinaryConvNet setting: small (CPU-sized, '
                             '16C3-MP2-32C3-MP2-64C3-MP2-2x512FC), wide '
                             '(32C3-MP2-64C3-MP2-128C3-MP2-2x1024FC) or paper '
                             '(2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC)')
    parser.add_argument('--dataset', choices=datasets.NAMES,
                        default='mnist',
                        help='fashion-mnist: Debian\'s dataset-fashion-mnist '
                             'or --data-dir; cifar10: --data-dir holding '
                             'cifar-10-batches-py')
    parser.add_argument('--unit', '-u', type=option_types.positive_int,
                        help='Number of units in each hidden layer')
    parser.add_argument('--noplot', dest='plot', action='store_false',
                        help='Disable PlotReport extension')
    parser.add_argument('--seed', type=option_types.seed, default=0,
                        help='Random seed (weights and minibatch order)')
    parser.add_argument('--data-dir', default=None,
                        help='Directory with the data set\'s files '
                             '(default: MNIST: the copy in data/mnist; '
                             'Fashion-MNIST: Debian\'s; docs/data.md)')


def _add_step_size_options(parser):
    parser.add_argument('--lr', type=option_types.positive_float,
                        help='Adam step size (alpha) of the first epoch')
    parser.add_argument('--lr-final', type=option_types.positive_float,
                        help='Step size of the last epoch when '
                             '--lr-schedule=exponential')
    parser.add_argument('--lr-schedule', choices=choices.LR_SCHEDULES,
                        help='exponential: multiply the step size by a fixed '
                             'factor after every epoch, from --lr to '
                             '--lr-final (the paper decays it '
                             'exponentially); halving: halve it every '
                             '--lr-halving-epochs epochs (BinaryNet\'s Torch7 '
                             'script); steps: --lr, then the values of '
                             '--lr-steps; constant: keep --lr (plain Adam)')
    parser.add_argument('--lr-steps', type=option_types.lr_steps,
                        metavar='E:LR[,E:LR...]',
                        help='With --lr-schedule=steps: the step size LR '
                             'from epoch E + 1 on (after E epochs)')
    parser.add_argument('--lr-halving-epochs', type=option_types.positive_int,
                        default=20, metavar='N',
                        help='Epochs between two halvings when '
                             '--lr-schedule=halving')


def _add_run_size_options(parser):
    parser.add_argument('--eval-batchsize', type=option_types.positive_int,
                        default=1000, metavar='N',
                        help='Images per evaluation batch (evaluation uses '
                             'the running BN statistics, so this changes '
                             'only the speed)')
    parser.add_argument('--train-subset', type=option_types.positive_int,
                        default=None, metavar='N',
                        help='Train on the first N training images only '
                             '(quick runs)')
    parser.add_argument('--test-subset', type=option_types.positive_int,
                        default=None, metavar='N',
                        help='Validate on the first N test images only')
    parser.add_argument('--snapshot-keep', type=option_types.positive_int,
                        default=3, metavar='N',
                        help='Keep the N newest snapshots in --out')
    parser.add_argument('--no-divergence-check', dest='divergence_check',
                        action='store_false',
                        help='Train on when the loss or a parameter becomes '
                             'NaN or infinite (by default the run stops '
                             'with exit status 3)')
    parser.add_argument('--communicator', choices=multi_node.COMMUNICATORS,
                        default=None,
                        help='Train data-parallel over the processes of '
                             '`mpiexec -n N` with this ChainerMN communicator '
                             '(naive: CPU; flat, pure_nccl: one GPU per '
                             'process); --batchsize is then per process')


def _add_quantization_options(group):
    group.add_argument('--weight-bits', type=option_types.bits, default=1,
                       metavar='K', help='Bit width of the weights')
    group.add_argument('--activation-bits', type=option_types.bits, default=1,
                       metavar='K', help='Bit width of the hidden activations')
    group.add_argument('--quantizer', choices=qst.QUANTIZERS,
                       default='linear',
                       help='linear: 2^K evenly spaced levels in [-1, 1]; '
                            'log: sign and power of two (LogQuant)')
    group.add_argument('--stochastic-activations',
                       action=argparse.BooleanOptionalAction,
                       help='Stochastic rounding of the hidden activations '
                            'while training (deterministic at evaluation); '
                            'the paper\'s stochastic binarization')
    group.add_argument('--stochastic-weights',
                       action=argparse.BooleanOptionalAction,
                       help='Stochastic rounding of the weights while '
                            'training (deterministic at evaluation); small '
                            'weights then binarize almost at random, so it '
                            'needs large steps, e.g. --glorot-step-sizes')
    group.add_argument('--gradient-bits', type=option_types.gradient_bits,
                       default=32, metavar='K',
                       help='Bit width of the weight gradients (the paper '
                            'uses 6), stochastic rounding on a power-of-two '
                            'scale')
    group.add_argument('--error-bits', type=option_types.gradient_bits,
                       default=32, metavar='K',
                       help='Bit width of the errors propagated between '
                            'layers')
    group.add_argument('--randomizer-bits', type=option_types.randomizer_bits,
                       metavar='K',
                       help='--optimizer wage_sgd: bits of the randomizer '
                            'of the stochastic rounding of the step (the '
                            'resolution of its probability, 2^(1-K))')


def _add_recipe_network_options(group):
    group.add_argument('--recipe', choices=sorted(recipes.RECIPES),
                       default='default',
                       help='a named bundle of options (listed below)')
    group.add_argument('--layers', type=option_types.positive_int,
                       metavar='N', help='Hidden layers')
    group.add_argument('--loss', choices=tuple(choices.LOSSES),
                       help='squared_hinge: mean of max(0, 1 - t y)^2 on '
                            'targets t = 2 onehot - 1; sum_squared_error: '
                            'half the squared distance to the one-hot '
                            'target (WAGE\'s); softmax_sum_squared_error: '
                            'the same of the softmax')
    group.add_argument('--input-dropout', type=option_types.fraction,
                       metavar='P', help='Dropout ratio of the input pixels')
    group.add_argument('--hidden-dropout', type=option_types.fraction,
                       metavar='P',
                       help='Dropout ratio of the binarized hidden units')
    group.add_argument('--bn', choices=net.BATCH_NORMALIZATIONS,
                       help='shift: shift-based BN (scale rounded to a power '
                            'of two)')
    group.add_argument('--bn-eps', type=option_types.positive_float,
                       metavar='EPS', help='BN epsilon')
    group.add_argument('--bn-decay', type=option_types.fraction,
                       metavar='D',
                       help='Decay of the running BN statistics (momentum '
                            '= 1 - D)')
    group.add_argument('--bn-population', type=option_types.non_negative_int,
                       metavar='N',
                       help='Before each evaluation, set the BN statistics '
                            'to their means over the first N training images '
                            '(Ioffe & Szegedy\'s population statistics; '
                            'qnn/training/extensions/'
                            'population_statistics.py); 0: the running '
                            'averages')


def _add_recipe_training_options(group):
    group.add_argument('--glorot-step-sizes',
                       action=argparse.BooleanOptionalAction,
                       help='Scale each binarized layer\'s step size by '
                            '1/sqrt(1.5/(fan_in+fan_out))')
    group.add_argument('--optimizer', choices=tuple(choices.OPTIMIZERS),
                       help='shift_adamax: AdaMax with power-of-two step '
                            'sizes (step size --lr); wage_sgd: WAGE\'s '
                            'quantized momentum-free step (learning rate '
                            '--lr, --gradient-bits, --randomizer-bits)')
    group.add_argument('--adamax-norm', choices=choices.ADAMAX_NORMS,
                       help='shift_adamax\'s infinity norm: decaying (the '
                            'paper\'s AdaMax) or rounded (stored as a power '
                            'of two, so it never decays: BinaryNet\'s Torch7 '
                            'code)')
    group.add_argument('--weight-init', choices=net.WEIGHT_INITS,
                       help='Initial quantized weights: lecun-normal, '
                            'N(0, 1/fan_in) (Chainer\'s default); uniform, '
                            'U(-1, 1) (BinaryNet\'s codes)')


def _add_recipe_data_options(group):
    group.add_argument('--input-range', choices=tuple(datasets.INPUT_RANGES),
                       help='unit: pixels in [0, 1] (Chainer\'s get_mnist); '
                            'symmetric: in [-1, 1], 2 p - 1, as BinaryNet\'s '
                            'scripts')
    group.add_argument('--random-shift', type=option_types.non_negative_int,
                       metavar='PIXELS',
                       help='Shift each training image by up to PIXELS '
                            'pixels each way at random (edges repeated; '
                            'qnn/iterators/augmentation.py)')
    group.add_argument('--random-flip', action=argparse.BooleanOptionalAction,
                       default=False,
                       help='Mirror each training image left-right with '
                            'probability 1/2')
    group.add_argument('--validation', type=option_types.non_negative_int,
                       metavar='N',
                       help='Hold out the last N training images for '
                            'validation; the test set is then reported '
                            'beside it and the best-validation epoch marked')

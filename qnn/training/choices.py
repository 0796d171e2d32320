"""The choices a run makes by name, each defined once.

The command line (:mod:`qnn.training.options`) offers these names, the
recipes (:mod:`qnn.training.recipes`) use them, and ``train_mnist.py`` builds
the run from them. The choices that belong to a network or a data set are
defined beside it and read from there: batch normalizations
(:data:`net.BATCH_NORMALIZATIONS`), ConvNet sizes
(:data:`net.ARCHITECTURES`), WAGE's LeNet-5s
(:data:`net.WAGE_NETWORKS`), weight initializers (:data:`net.WEIGHT_INITS`),
quantizers (:data:`qst.QUANTIZERS`), data sets and pixel ranges
(:data:`qnn.datasets.NAMES`, :data:`qnn.datasets.INPUT_RANGES`).
"""
from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer.functions as F

from qnn.functions.squared_hinge import squared_hinge
from qnn.functions.sum_squared_error import softmax_sum_squared_error
from qnn.functions.sum_squared_error import sum_squared_error
from qnn.optimizers.inplace_adam import InplaceAdam
from qnn.optimizers.shift_adamax import ShiftAdaMax
from qnn.optimizers.wage_sgd import WageSGD

# the classifier's loss: name -> function(y, t)
LOSSES = {'softmax_cross_entropy': F.softmax_cross_entropy,
          'squared_hinge': squared_hinge,
          'sum_squared_error': sum_squared_error,
          'softmax_sum_squared_error': softmax_sum_squared_error}
# the optimizer: name -> class taking alpha (the step size)
OPTIMIZERS = {'adam': InplaceAdam, 'shift_adamax': ShiftAdaMax,
              'wage_sgd': WageSGD}
# how the step size changes from epoch to epoch
LR_SCHEDULES = ('exponential', 'halving', 'steps', 'constant')
# shift-based AdaMax's infinity norm: decaying (the paper's AdaMax) or
# rounded to a power of two when stored (BinaryNet's Torch7 code)
ADAMAX_NORMS = ('decaying', 'rounded')
# the network: net.MnistMLP, net.BinaryConvNet or net.WageLeNet5
ARCHS = ('mlp', 'cnn', 'wage')

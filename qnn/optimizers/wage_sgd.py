"""WAGE's update of the weights: G, the quantized gradient step."""
from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
from chainer import backend
from chainer import optimizer
from chainer import utils

from qnn.functions import wage_quantizers
import qst

_default_hyperparam = optimizer.Hyperparameter()
_default_hyperparam.alpha = 1.0
_default_hyperparam.gradient_bits = 8
_default_hyperparam.randomizer_bits = 16


def wage_update(grad, lr, gradient_bits, randomizer_bits, stochastic=True):
    """WAGE's G: the step :math:`\\Delta W` of a gradient :math:`g`.

    .. math::

        x &= \\frac{g}{\\mathrm{Shift}(\\max|g|)} \\\\
        n &= \\sigma(k_R) \\, \\mathrm{round}\\left(
             \\frac{\\eta \\, x}{\\sigma(k_R)}\\right) \\\\
        \\Delta W &= \\sigma(k_G) \\, \\mathrm{sign}(n) \\left(
            \\lfloor |n| \\rfloor + [u < |n| - \\lfloor |n| \\rfloor]
            \\right), \\quad u \\sim U[0, 1)

    with :math:`\\eta` the learning rate (WAGE's integer LR), :math:`k_R`
    the bits of the randomizer (the resolution of the probability of
    rounding up) and :math:`k_G` the bits of the step. The mean of
    :math:`\\Delta W` is :math:`\\sigma(k_G) \\, n`, the unrounded step to
    within :math:`\\sigma(k_G) \\sigma(k_R) / 2`. :math:`\\Delta W` is an
    integer multiple of :math:`\\sigma(k_G)`. A zero gradient gives a zero
    step (:math:`\\mathrm{Shift}(0) = 1`); a NaN anywhere, NaN everywhere.
    ``gradient_bits=32`` is the plain step :math:`\\eta \\, g` (WAGE's
    unquantized G).

    Args:
        grad (:ref:`ndarray`): Gradient.
        lr (float): :math:`\\eta`.
        gradient_bits (int): :math:`k_G`, 2..32.
        randomizer_bits (int): :math:`k_R`, 1..32.
        stochastic (bool): ``False`` returns the unrounded
            :math:`\\sigma(k_G) \\, n` (the mean, for tests).

    Returns:
        :ref:`ndarray`: :math:`\\Delta W`, of ``grad``'s shape and dtype.
    """
    if gradient_bits == qst.FULL_PRECISION:
        return (grad * grad.dtype.type(lr)).astype(grad.dtype, copy=False)
    xp = backend.get_array_module(grad)
    dtype = qst._work_dtype(grad.dtype)
    x = utils.force_array(grad, dtype).copy()
    x /= wage_quantizers.shift(xp.abs(x).max()).astype(dtype)
    x *= lr
    r = wage_quantizers.sigma(randomizer_bits)
    x /= r
    n = qst._round(x, False)
    n *= r
    if stochastic:
        sign = xp.sign(n)
        n = qst._round(xp.abs(n), True)
        n *= sign
    n *= wage_quantizers.sigma(gradient_bits)
    return n.astype(grad.dtype, copy=False)


class WageSGDRule(optimizer.UpdateRule):

    """Update rule of :class:`WageSGD`:

    .. math::

        W \\leftarrow \\mathrm{clip}(W - \\Delta W,
            -1 + \\sigma(k_G), 1 - \\sigma(k_G))

    with :math:`\\Delta W` of :func:`wage_update` (no momentum, no state).

    Args:
        parent_hyperparam (~chainer.optimizer.Hyperparameter): Defaults.
        alpha (float): Learning rate :math:`\\eta`.
        gradient_bits (int): :math:`k_G`.
        randomizer_bits (int): :math:`k_R`.
    """

    def __init__(self, parent_hyperparam=None, alpha=None,
                 gradient_bits=None, randomizer_bits=None):
        super(WageSGDRule, self).__init__(
            parent_hyperparam or _default_hyperparam)
        for name, value in (('alpha', alpha), ('gradient_bits', gradient_bits),
                            ('randomizer_bits', randomizer_bits)):
            if value is not None:
                setattr(self.hyperparam, name, value)

    def update_core(self, param):
        grad = param.grad
        if grad is None:
            return
        hp = self.hyperparam
        xp = backend.get_array_module(param.array)
        param.array -= wage_update(grad, hp.alpha, hp.gradient_bits,
                                   hp.randomizer_bits)
        bound = 1 - wage_quantizers.sigma(hp.gradient_bits)
        xp.clip(param.array, -bound, bound, out=param.array)


class WageSGD(optimizer.GradientMethod):

    """WAGE's momentum-free optimizer (see :class:`WageSGDRule`).

    ``alpha`` is the learning rate :math:`\\eta` (WAGE's LR, 1 in its
    MNIST recipes), a hyperparameter the step schedule changes.

    Args:
        alpha (float): Learning rate.
        gradient_bits (int): :math:`k_G`, 2..32 (``--gradient-bits``).
        randomizer_bits (int): :math:`k_R`, 1..32 (``--randomizer-bits``).
    """

    def __init__(self, alpha=_default_hyperparam.alpha,
                 gradient_bits=_default_hyperparam.gradient_bits,
                 randomizer_bits=_default_hyperparam.randomizer_bits):
        super(WageSGD, self).__init__()
        self.hyperparam.alpha = alpha
        self.hyperparam.gradient_bits = qst.check_gradient_bits(
            gradient_bits)
        self.hyperparam.randomizer_bits = qst.check_bits(randomizer_bits)

    alpha = optimizer.HyperparameterProxy('alpha')
    gradient_bits = optimizer.HyperparameterProxy('gradient_bits')
    randomizer_bits = optimizer.HyperparameterProxy('randomizer_bits')

    def create_update_rule(self):
        return WageSGDRule(self.hyperparam)

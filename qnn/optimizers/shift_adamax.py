"""Shift-based AdaMax (Hubara et al. 2016, shift-based AdaMax algorithm)."""
import math

import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import backend
from chainer import optimizer

from qnn.backends import cpu_kernels
from qnn.functions.ap2 import ap2
from qnn.functions.ap2 import numba_ap2
from qnn.functions.ap2 import sqrt_half

_default_hyperparam = optimizer.Hyperparameter()
# the paper's "good default settings": alpha = 2^-10, 1 - beta1 = 2^-3,
# 1 - beta2 = 2^-10 (all three powers of two, so that every product of the
# update is a shift)
_default_hyperparam.alpha = 2.0 ** -10
_default_hyperparam.beta1 = 1.0 - 2.0 ** -3
_default_hyperparam.beta2 = 1.0 - 2.0 ** -10
_default_hyperparam.eps = 1e-8
_default_hyperparam.eta = 1.0
_default_hyperparam.round_norm = False


class ShiftAdaMaxRule(optimizer.UpdateRule):

    """Update rule of :class:`ShiftAdaMax`.

    AdaMax (Kingma & Ba 2015, algorithm 2) with its two divisions made bit
    shifts by rounding the divisors' reciprocals to powers of two
    (:func:`qnn.functions.ap2.ap2`). At step :math:`t` (1, 2, ...), with
    gradient :math:`g`:

    .. math::

        m &\\leftarrow \\beta_1 m + (1 - \\beta_1) g \\\\
        u &\\leftarrow \\max(\\beta_2 u, |g|) \\\\
        s_t &= \\mathrm{AP2}\\left(\\frac{\\eta \\, \\alpha}
                                         {1 - \\beta_1^t}\\right) \\\\
        \\theta &\\leftarrow \\theta - s_t \\,
            \\frac{m}{\\mathrm{AP2}(u + \\epsilon)}

    Both :math:`s_t` and :math:`\\mathrm{AP2}(u + \\epsilon)` are powers of
    two, so the update is :math:`m` shifted. The state keeps :math:`u`
    unrounded: stored rounded, :math:`\\beta_2 u` with
    :math:`\\beta_2 = 1 - 2^{-10}` would round back to :math:`u` and the
    estimate would never decay. :math:`\\epsilon` only keeps a parameter
    whose gradients have all been 0 (:math:`m = u = 0`) at 0 instead of NaN.

    With ``round_norm`` the state keeps :math:`u` rounded,
    :math:`u \\leftarrow \\mathrm{AP2}(\\max(\\beta_2 u, |g|))`, as
    BinaryNet's Torch7 ``adaMax_binary_clip_shift`` does. For any
    :math:`\\beta_2 > \\sqrt{1/2}`, :math:`\\mathrm{AP2}(\\beta_2 2^k) = 2^k`:
    the norm never decays, it is the running maximum of :math:`|g|`
    rounded, so the steps shrink as the gradients do (an annealing that
    the Torch7 recipe's large step size relies on).
    :math:`\\eta` (1 by default) is Chainer's schedule multiplier, here the
    per-parameter step-size scale of
    :func:`qnn.optimizers.step_sizes.scale_step_sizes`; it is inside the
    rounding so that a scaled step is still a shift.

    Args:
        parent_hyperparam (~chainer.optimizer.Hyperparameter): Hyperparameter
            that provides the default values.
        alpha (float): Step size :math:`\\alpha`.
        beta1 (float): Decay rate of the first moment.
        beta2 (float): Decay rate of the infinity norm :math:`u`.
        eps (float): Small value added to :math:`u`.
        eta (float): Step-size multiplier.
        round_norm (bool): Store :math:`u` rounded to a power of two.
    """

    def __init__(self, parent_hyperparam=None, alpha=None, beta1=None,
                 beta2=None, eps=None, eta=None, round_norm=None):
        super(ShiftAdaMaxRule, self).__init__(
            parent_hyperparam or _default_hyperparam)
        for name, value in (('alpha', alpha), ('beta1', beta1),
                            ('beta2', beta2), ('eps', eps), ('eta', eta),
                            ('round_norm', round_norm)):
            if value is not None:
                setattr(self.hyperparam, name, value)

    def init_state(self, param):
        xp = backend.get_array_module(param.array)
        with chainer.using_device(param.device):
            self.state['m'] = xp.zeros_like(param.array)
            self.state['u'] = xp.zeros_like(param.array)

    @property
    def step_size(self):
        """The power of two :math:`s_t` of the current step :attr:`t`."""
        hp = self.hyperparam
        if self.t == 0:
            raise RuntimeError('step_size is defined from the first update '
                               'on (t >= 1)')
        return float(ap2(_float64(
            hp.eta * hp.alpha / (1.0 - math.pow(hp.beta1, self.t)))))

    def update_core(self, param):
        grad = param.grad
        if grad is None:
            return
        hp = self.hyperparam
        m, u = self.state['m'], self.state['u']
        if cpu_kernels.usable(param.array, grad, m, u):
            # the same operations in one pass (bit for bit)
            numba_shift_adamax(param.array, grad, m, u, hp.beta1,
                               hp.beta2, hp.eps, self.step_size,
                               hp.round_norm, sqrt_half(param.dtype))
            return
        xp = backend.get_array_module(param.array)
        m += (1.0 - hp.beta1) * (grad - m)
        xp.maximum(hp.beta2 * u, xp.abs(grad), out=u)
        if hp.round_norm:
            u[...] = ap2(u)
        divisor = ap2(u + u.dtype.type(hp.eps))
        # m / divisor and step * (...) are exact: both are powers of two
        param.array -= (self.step_size * m / divisor).astype(
            param.dtype, copy=False)


def _float64(value):
    return numpy.asarray(value, dtype=numpy.float64)


class ShiftAdaMax(optimizer.GradientMethod):

    """Shift-based AdaMax optimizer (see :class:`ShiftAdaMaxRule`).

    Used like :class:`chainer.optimizers.Adam`; ``alpha``, ``beta1``,
    ``beta2``, ``eps`` and ``eta`` are hyperparameters that extensions such
    as :class:`chainer.training.extensions.ExponentialShift` can change
    (``'alpha'``), and that each parameter's update rule may override.

    Args:
        alpha (float): Step size (default :math:`2^{-10}`).
        beta1 (float): Decay rate of the first moment (default
            :math:`1 - 2^{-3}`).
        beta2 (float): Decay rate of the infinity norm (default
            :math:`1 - 2^{-10}`).
        eps (float): Added to the infinity norm (default 1e-8).
        eta (float): Step-size multiplier (default 1).
        round_norm (bool): Store the infinity norm rounded to a power of
            two, so that it never decays (BinaryNet's Torch7 code; default
            ``False``, the paper's algorithm).
    """

    def __init__(self, alpha=_default_hyperparam.alpha,
                 beta1=_default_hyperparam.beta1,
                 beta2=_default_hyperparam.beta2,
                 eps=_default_hyperparam.eps, eta=_default_hyperparam.eta,
                 round_norm=_default_hyperparam.round_norm):
        super(ShiftAdaMax, self).__init__()
        self.hyperparam.alpha = alpha
        self.hyperparam.beta1 = beta1
        self.hyperparam.beta2 = beta2
        self.hyperparam.eps = eps
        self.hyperparam.eta = eta
        self.hyperparam.round_norm = bool(round_norm)

    alpha = optimizer.HyperparameterProxy('alpha')
    beta1 = optimizer.HyperparameterProxy('beta1')
    beta2 = optimizer.HyperparameterProxy('beta2')
    eps = optimizer.HyperparameterProxy('eps')
    eta = optimizer.HyperparameterProxy('eta')
    round_norm = optimizer.HyperparameterProxy('round_norm')

    def create_update_rule(self):
        return ShiftAdaMaxRule(self.hyperparam)


# --- numba ------------------------------------------------------------------

def _shift_adamax_kernels(numba):
    """``'shift_adamax'`` (parallel) and ``'shift_adamax_small'``: the loop
    of :func:`numba_shift_adamax`."""
    ap2_of = numba_ap2(numba)

    def shift_adamax_loop(param, grad, m, u, c1, beta2, eps, step,
                          round_norm, sqrt_half, exponent_mask,
                          fraction_mask, exponent_one, sqrt_half_fraction,
                          n):
        for i in numba.prange(n):
            g = grad[i]
            mi = m[i] + c1 * (g - m[i])
            m[i] = mi
            # numpy.maximum: NaN from either side wins
            bu = beta2 * u[i]
            ag = abs(g)
            if bu != bu or ag <= bu:
                ui = bu
            else:
                ui = ag  # larger, or NaN
            if round_norm:
                ui = ap2_of(ui, param, sqrt_half, exponent_mask,
                            fraction_mask, exponent_one, sqrt_half_fraction)
            u[i] = ui
            divisor = ap2_of(ui + eps, param, sqrt_half, exponent_mask,
                             fraction_mask, exponent_one, sqrt_half_fraction)
            param[i] -= step * mi / divisor

    # the two versions as Adam's (see _adam_kernels)
    shift_adamax_small = cpu_kernels.renamed(shift_adamax_loop,
                                             'shift_adamax_small')
    # error_model='numpy': m / 0 (eps = 0) gives inf or NaN, as in NumPy,
    # instead of raising ZeroDivisionError
    return {
        'shift_adamax': numba.njit(parallel=True, cache=True,
                                   error_model='numpy')(shift_adamax_loop),
        'shift_adamax_small': numba.njit(cache=True, error_model='numpy')(
            shift_adamax_small),
    }


_kernels = cpu_kernels.LazyKernels(_shift_adamax_kernels)


def numba_shift_adamax(param, grad, m, u, beta1, beta2, eps, step, round_norm,
                       sqrt_half):
    """One shift-based AdaMax step
    (:class:`qnn.optimizers.shift_adamax.ShiftAdaMaxRule`) on C-contiguous
    arrays of one float dtype, in place:

    .. math::

        m \\mathrel{+}= (1 - \\beta_1)(g - m), \\qquad
        u \\leftarrow \\max(\\beta_2 u, |g|), \\qquad
        \\theta \\mathrel{-}= \\frac{s \\, m}{\\mathrm{AP2}(u + \\epsilon)}

    with ``step`` :math:`s` a power of two and every constant rounded to
    the arrays' dtype first, as NumPy does with a Python scalar. With
    ``round_norm`` :math:`u` is stored rounded,
    :math:`u \\leftarrow \\mathrm{AP2}(\\max(\\beta_2 u, |g|))`.
    ``sqrt_half`` is :func:`qnn.functions.ap2.sqrt_half` of the dtype, the
    mantissa below which AP2 rounds down.
    """
    dtype = param.dtype.type
    n = param.size
    # the IEEE 754 fields of the dtype, for AP2 on the bits
    uint = numpy.dtype('u{}'.format(param.itemsize)).type
    fraction_bits = numpy.finfo(param.dtype).nmant
    exponent_one = uint(1) << uint(fraction_bits)
    fraction_mask = exponent_one - uint(1)
    exponent_mask = ((uint(1) << uint(8 * param.itemsize - 1)) - uint(1)) \
        & ~fraction_mask
    threshold = numpy.asarray(sqrt_half, param.dtype)
    kernel = 'shift_adamax' if n >= cpu_kernels.PARALLEL_MIN \
        else 'shift_adamax_small'
    _kernels[kernel](
        param.reshape(-1), grad.reshape(-1), m.reshape(-1), u.reshape(-1),
        dtype(1.0 - beta1), dtype(beta2), dtype(eps), dtype(step),
        bool(round_norm), threshold[()], exponent_mask,
        fraction_mask, exponent_one,
        threshold.view(uint)[()] & fraction_mask, n)

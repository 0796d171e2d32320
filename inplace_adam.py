"""Adam whose CPU update allocates nothing: Chainer's arithmetic, in place."""
import numpy

import chainer_compat  # NOQA: F401  (first: Chainer on NumPy 2)
import chainer.optimizers
from chainer.optimizers import adam

import cpu_threads


class InplaceAdamRule(adam.AdamRule):

    """:class:`chainer.optimizers.adam.AdamRule` with an in-place CPU update.

    Chainer's CPU update allocates about eight temporaries the size of the
    parameter per step; for the 1.8 M weights of the MNIST MLP that is tens
    of megabytes of fresh pages per iteration, and the page faults showed
    up as system time. This rule does the same operations in the same
    order, so the result is bit for bit Chainer's, in one scratch array
    kept between steps:

    .. math::

        m &\\mathrel{+}= (1 - \\beta_1)(g - m) \\\\
        v &\\mathrel{+}= (1 - \\beta_2)(g^2 - v) \\\\
        \\theta &\\leftarrow (1 - \\eta\\lambda)\\,\\theta
            - \\eta \\, \\frac{\\alpha_t}{\\sqrt{v} + \\epsilon} \\, m

    A large parameter is updated in pieces on several cores at once
    (:mod:`cpu_threads`), which leaves every element's arithmetic unchanged.

    AMSGrad, AdaBound and float16 parameters (computed in float32) take
    Chainer's own path; so does the GPU, whose update is one fused kernel.
    """

    _scratch = None  # not state: never saved, rebuilt on demand
    threads = None  # None: cpu_threads' default

    def update_core_cpu(self, param):
        grad = param.grad
        hp = self.hyperparam
        if grad is None or hp.amsgrad or hp.adabound or \
                param.dtype == numpy.float16 or \
                not isinstance(param.array, numpy.ndarray):
            return super(InplaceAdamRule, self).update_core_cpu(param)
        self._check_eps(param.dtype.type)
        m, v = self.state['m'], self.state['v']
        if self._scratch is None or self._scratch.shape != m.shape:
            self._scratch = numpy.empty_like(m)
        cpu_threads.run(self._update,
                        (param.array, grad, m, v, self._scratch),
                        self.threads)

    def _update(self, param, grad, m, v, t):
        hp = self.hyperparam
        numpy.subtract(grad, m, out=t)
        t *= 1.0 - hp.beta1
        m += t
        numpy.multiply(grad, grad, out=t)
        t -= v
        t *= 1.0 - hp.beta2
        v += t
        numpy.sqrt(v, out=t)
        t += hp.eps
        numpy.divide(self.alpha_t, t, out=t)
        t *= m
        decay = 1.0 - hp.eta * hp.weight_decay_rate
        if decay != 1:
            param *= decay
        t *= -hp.eta
        param += t


class InplaceAdam(chainer.optimizers.Adam):

    """:class:`chainer.optimizers.Adam` with :class:`InplaceAdamRule`.

    Same arguments, hyperparameters, state and snapshots as Chainer's Adam
    (a snapshot of one loads into the other), plus ``threads``: how many
    threads update a large parameter on the CPU (default:
    :func:`cpu_threads.get_threads`, the number of cores).
    """

    def __init__(self, *args, **kwargs):
        self.threads = kwargs.pop('threads', None)
        super(InplaceAdam, self).__init__(*args, **kwargs)

    def create_update_rule(self):
        rule = InplaceAdamRule(self.hyperparam)
        rule.threads = self.threads
        return rule

"""Adam whose CPU update allocates nothing: Chainer's arithmetic, in place."""
import numpy

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer.optimizers
from chainer.optimizers import adam

from qnn.backends import cpu_kernels
from qnn.backends import cpu_threads
import weight_clip


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

    With numba (:mod:`qnn.backends.cpu_kernels`) the whole update is one pass
    over the arrays (on all cores for a large parameter), bit for bit the same;
    without it, NumPy's passes run on pieces of a large parameter on several
    cores at once (:mod:`qnn.backends.cpu_threads`), which leaves every
    element's arithmetic unchanged.

    ``numba_clip``, set by :class:`InplaceAdam` for one update, appends the
    clip of the parameter to ``[lower, upper]`` to that update (in the same
    pass with numba) and records it in ``clipped``, so that
    :class:`weight_clip.WeightClip` does not clip the parameter again.

    AMSGrad, AdaBound and float16 parameters (computed in float32) take
    Chainer's own path; so does the GPU, whose update is one fused kernel.
    """

    _scratch = None  # not state: never saved, rebuilt on demand
    threads = None  # None: cpu_threads' default
    numba_clip = None  # (lower, upper, optimizer step) or None
    clipped = None  # numba_clip of the last update that clipped
    _clip = None  # numba_clip of the update in progress

    def update_core(self, param):
        clip, self.numba_clip = self.numba_clip, None  # one update only
        self._clip = clip
        super(InplaceAdamRule, self).update_core(param)

    def update_core_cpu(self, param):
        grad = param.grad
        hp = self.hyperparam
        if grad is None or hp.amsgrad or hp.adabound or \
                param.dtype == numpy.float16 or \
                not isinstance(param.array, numpy.ndarray):
            return super(InplaceAdamRule, self).update_core_cpu(param)
        self._check_eps(param.dtype.type)
        m, v = self.state['m'], self.state['v']
        arrays = (param.array, grad, m, v)
        clip = self._clip
        if cpu_kernels.usable(*arrays):
            numba_adam(*arrays, c1=1.0 - hp.beta1, c2=1.0 - hp.beta2,
                       alpha_t=self.alpha_t, eps=hp.eps, eta=hp.eta,
                       weight_decay_rate=hp.weight_decay_rate,
                       clip=None if clip is None else clip[:2])
        else:
            if self._scratch is None or self._scratch.shape != m.shape:
                self._scratch = numpy.empty_like(m)
            cpu_threads.run(self._update, arrays + (self._scratch,),
                            self.threads)
            if clip is not None:
                lower, upper = clip[:2]
                cpu_threads.run(
                    lambda a: numpy.clip(a, lower, upper, out=a),
                    (param.array,), self.threads)
        if clip is not None:
            self.clipped = clip

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
    :func:`qnn.backends.cpu_threads.get_threads`, the number of cores).
    """

    def __init__(self, *args, **kwargs):
        self.threads = kwargs.pop('threads', None)
        super(InplaceAdam, self).__init__(*args, **kwargs)

    def create_update_rule(self):
        rule = InplaceAdamRule(self.hyperparam)
        rule.threads = self.threads
        return rule

    def update(self, lossfun=None, *args, **kwds):
        self._arm_numba_clip()
        super(InplaceAdam, self).update(lossfun, *args, **kwds)

    def _arm_numba_clip(self):
        """Hands the clip of a :class:`weight_clip.WeightClip` hook to the
        update rules of the quantized weights, for the coming update.

        Only when that hook is the first post-update hook (no other hook may
        see the weights between update and clip) and a rule has no
        post-update hook of its own; otherwise the hook clips as usual.
        """
        hooks = list(self._hookable._post_update_hooks.values())
        if not hooks or not isinstance(hooks[0], weight_clip.WeightClip):
            return
        clip = (hooks[0].lower, hooks[0].upper, self.t + 1)
        for param in weight_clip.quantized_params(self.target):
            rule = param.update_rule
            if isinstance(rule, InplaceAdamRule) and \
                    not rule._hookable._post_update_hooks:
                rule.numba_clip = clip


# --- numba ------------------------------------------------------------------

def _adam_kernels(numba):
    """``'adam'`` (parallel) and ``'adam_small'``: the loop of
    :func:`numba_adam`."""
    def adam_loop(param, grad, m, v, c1, c2, alpha_t, eps, decay, neg_eta,
                  lower, upper, clip, n):
        for i in numba.prange(n):
            g = grad[i]
            mi = m[i] + (g - m[i]) * c1
            m[i] = mi
            vi = v[i] + (g * g - v[i]) * c2
            v[i] = vi
            t = alpha_t / (numpy.sqrt(vi) + eps) * mi
            p = param[i]
            if decay != 1:
                p = p * decay
            p = p + t * neg_eta
            # NaN fails both tests and stays NaN, as in numpy.clip
            if clip:
                if p < lower:
                    p = lower
                elif p > upper:
                    p = upper
            param[i] = p

    # Measured here (2 cores): starting a parallel loop costs about 0.1 ms;
    # Adam's loop in parallel is vectorized and runs 0.5 ms per million
    # elements against 4 ms on one core, so it pays from about 30,000
    # elements (PARALLEL_MIN). numba's cache tells functions apart by name
    # and types, not by the parallel flag, hence the one-core copy under
    # another name.
    adam_small = cpu_kernels.renamed(adam_loop, 'adam_small')
    return {
        'adam': numba.njit(parallel=True, cache=True)(adam_loop),
        'adam_small': numba.njit(cache=True)(adam_small),
    }


_kernels = cpu_kernels.LazyKernels(_adam_kernels)


def numba_adam(param, grad, m, v, c1, c2, alpha_t, eps, eta, weight_decay_rate,
               clip=None):
    """One Adam step on flat C-contiguous arrays of one float dtype, in
    place, then the clip of ``param`` to ``clip = (lower, upper)``:

    .. math::

        m &\\mathrel{+}= c_1 (g - m), \\qquad
        v \\mathrel{+}= c_2 (g^2 - v), \\\\
        \\theta &\\leftarrow (1 - \\eta\\lambda)\\,\\theta
            + \\frac{\\alpha_t}{\\sqrt{v} + \\epsilon} \\, m \\, (-\\eta),
        \\qquad \\theta \\leftarrow \\min(\\max(\\theta, l), u)

    with :math:`c_1 = 1 - \\beta_1`, :math:`c_2 = 1 - \\beta_2` and every
    constant rounded to the arrays' dtype first, as NumPy does with a
    Python scalar.
    """
    dtype = param.dtype.type
    decay = 1.0 - eta * weight_decay_rate
    lower, upper = clip if clip is not None else (0.0, 0.0)
    n = param.size
    kernel = 'adam' if n >= cpu_kernels.PARALLEL_MIN else 'adam_small'
    _kernels[kernel](
        param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
        dtype(c1), dtype(c2), dtype(alpha_t), dtype(eps), dtype(decay),
        dtype(-eta), dtype(lower), dtype(upper), clip is not None, n)

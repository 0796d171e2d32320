"""Optimizer hook that clips the real-valued weights of quantized links."""
from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
from chainer import backend
import chainerx

from qnn.backends import cpu_threads


def quantized_params(target):
    """The parameters yielded by the ``quantized_params()`` method of the
    links of ``target`` (e.g. the weights ``W`` of
    :class:`link_quantized_linear.QuantizedLinear`)."""
    for link in target.links():
        params = getattr(link, 'quantized_params', None)
        if params is not None:
            for param in params():
                yield param


class WeightClip(object):

    """Optimizer hook: clip quantized weights to [lower, upper] after updates.

    After every update (timing ``'post'``) it sets, in place,

    .. math:: W \\leftarrow \\min(\\max(W, \\text{lower}), \\text{upper})

    for every parameter yielded by the ``quantized_params()`` method of a link
    in the optimizer's target (for
    :class:`link_quantized_linear.QuantizedLinear` that is its weight ``W``).
    Nothing else is touched: biases, batch normalization's ``gamma`` and
    ``beta`` and the parameters of links without ``quantized_params`` keep
    their values. The paper clips only the binarized weights: without the clip
    a real weight can drift far from 0, where many gradient steps are needed
    before its sign (all the forward pass sees) can change; clipping ``gamma``
    too would cap the scale of the output layer's logits.

    Args:
        lower (float): Lower bound.
        upper (float): Upper bound.

    Attributes:
        ~WeightClip.timing (str): ``'post'``.
        ~WeightClip.call_for_each_param (bool): ``False``: the hook needs the
            links, not the bare parameters.
    """
    name = 'WeightClip'
    call_for_each_param = False
    timing = 'post'

    def __init__(self, lower=-1.0, upper=1.0):
        if not lower < upper:
            raise ValueError(
                'WeightClip needs lower < upper, got lower={} upper={}'
                .format(lower, upper))
        self.lower = lower
        self.upper = upper

    def __call__(self, optimizer):
        done = (self.lower, self.upper, optimizer.t)
        for param in quantized_params(optimizer.target):
            if param.array is None:
                continue
            # an update rule of inplace_adam may have clipped already, in
            # the same pass as its update
            if getattr(param.update_rule, 'clipped', None) == done:
                continue
            self._clip(param.array)

    def _clip(self, array):
        if isinstance(array, chainerx.ndarray):
            # chainerx.clip has no `out`; clip the NumPy/CuPy view in place
            array = backend.from_chx(array)
        xp = backend.get_array_module(array)
        cpu_threads.run(
            lambda a: xp.clip(a, self.lower, self.upper, out=a), (array,))

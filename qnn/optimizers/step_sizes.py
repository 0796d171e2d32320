"""Per-layer step sizes of the BinaryNet recipes (Glorot's scale)."""
import math

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)


def glorot_scale(fan_in, fan_out):
    """The step-size multiplier of a layer:
    :math:`1 / \\sqrt{1.5 / (\\mathrm{fan_{in}} + \\mathrm{fan_{out}})}`.

    :math:`\\sqrt{1.5 / (\\mathrm{fan_{in}} + \\mathrm{fan_{out}})}` is half
    the width of Glorot & Bengio's uniform initialization,
    :math:`\\sqrt{6 / (\\mathrm{fan_{in}} + \\mathrm{fan_{out}})} / 2`. A
    binarized weight lives in [-1, 1] whatever the layer's size; dividing the
    step by the scale its real-valued counterpart would have had makes the
    relative step size the same in every layer (Courbariaux et al. 2015).
    """
    if fan_in <= 0 or fan_out <= 0:
        raise ValueError('fan_in and fan_out must be positive, got {} and {}'
                         .format(fan_in, fan_out))
    return 1.0 / math.sqrt(1.5 / (fan_in + fan_out))


def scale_step_sizes(model, optimizer):
    """Multiplies the step size of each quantized weight by its
    :func:`glorot_scale`.

    The quantized weights are those yielded by the ``quantized_params()``
    method of the links of ``model`` (the ``W`` of each
    :class:`link_quantized_linear.QuantizedLinear` and
    :class:`qnn.links.quantized_convolution_2d.QuantizedConvolution2D`). A
    dense weight of shape ``(out, in)`` has ``fan_in = in``, ``fan_out = out``;
    a convolution's ``(out, in, kh, kw)`` has ``fan_in = in * kh * kw`` and
    ``fan_out = out * kh * kw``, as in BinaryNet's Theano code. Every other
    parameter (batch normalization's :math:`\\gamma` and :math:`\\beta`) keeps
    the optimizer's step size, as in the Theano recipe.

    It sets the hyperparameter ``eta`` of each weight's own update rule.
    ``eta`` is the schedule multiplier of :class:`chainer.optimizers.Adam`
    (and so of :class:`qnn.optimizers.inplace_adam.InplaceAdam`, and of
    :class:`qnn.optimizers.shift_adamax.ShiftAdaMax`): their update is
    :math:`\\theta \\leftarrow \\theta - \\eta \\cdot \\alpha_t \\cdots`.
    ``alpha`` stays the optimizer's: each rule's hyperparameter falls back
    to the optimizer's for every name it does not set itself, so
    :class:`~chainer.training.extensions.ExponentialShift` on ``'alpha'``
    (which sets the optimizer's) keeps acting on every layer, and a layer's
    effective step size is always ``scale * optimizer.alpha``. Setting
    ``alpha`` on a rule instead would have frozen it there.

    ``eta`` also multiplies Adam's ``weight_decay_rate`` term (0 here).
    Update rules are not saved in snapshots with their hyperparameters:
    call this after every ``optimizer.setup``, resumed runs included.

    Args:
        model (~chainer.Link): The model, already initialized (no ``None``
            input size left) and set up in ``optimizer``.
        optimizer (~chainer.GradientMethod): An optimizer with the
            hyperparameter ``eta``, whose ``setup`` has been called.

    Returns:
        dict: The scale given to each weight, by its path in ``model``
        (e.g. ``{'/predictor/l1/W': 35.9, ...}``).
    """
    if getattr(optimizer, 'target', None) is None:
        raise ValueError('call optimizer.setup(model) before '
                         'scale_step_sizes')
    if not hasattr(optimizer.hyperparam, 'eta'):
        raise TypeError('{} has no step-size multiplier eta; use Adam, '
                        'InplaceAdam or ShiftAdaMax'.format(
                            type(optimizer).__name__))
    names = {id(param): name for name, param in model.namedparams()}
    scales = {}
    for link in model.links():
        quantized_params = getattr(link, 'quantized_params', None)
        if quantized_params is None:
            continue
        for param in quantized_params():
            name = names.get(id(param), param.name)
            scale = glorot_scale(*_fans(param, name))
            param.update_rule.hyperparam.eta = scale
            scales[name] = scale
    return scales


def _fans(param, name):
    """``(fan_in, fan_out)`` of a weight as BinaryNet's (and Lasagne's)
    code counts them: the kernel's area times the input, and times the
    output channels."""
    if param.array is None:
        raise ValueError('{} is not initialized yet (input size None): run '
                         'one forward pass first'.format(name))
    if param.update_rule is None:
        raise ValueError('{} has no update rule: set up the optimizer with '
                         'this model first'.format(name))
    area = param.size // (param.shape[0] * param.shape[1])
    return param.shape[1] * area, param.shape[0] * area

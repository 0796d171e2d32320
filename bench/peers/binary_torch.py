"""The binarized layers of the PyTorch peers.

They compute what ``train_mnist.py``'s do:

* weights: forward :math:`\\mathrm{sign}(W)` with sign(0) = +1, backward
  the gradient handed to the real weight :math:`W` unchanged (the
  straight-through estimator; the weights stay in [-1, 1], clipped after
  every step by :func:`clip_weights`);
* hidden activations: forward :math:`\\mathrm{sign}(x)`, backward
  :math:`g \\, 1_{|x| \\le 1}` (the hard tanh's gradient);
* weights initialized from :math:`N(0, 1/\\text{fan_in})`, no biases,
  batch normalization with the project's epsilon
  (:func:`project_source.bn_eps`) and momentum 0.1 (Chainer's decay 0.9).
"""
import numpy
import torch
import torch.nn.functional as F

import project_source

BN_MOMENTUM = 0.1  # Chainer's decay 0.9


def tensors(images, labels):
    """float32 pixels / 255 in [0, 1] and int64 labels, as tensors."""
    return (torch.from_numpy(images.astype(numpy.float32) / 255),
            torch.from_numpy(labels.astype(numpy.int64)))


def _sign(x):
    # sign(0) = +1: sign(sign(x) + 1/2). Three vectorized passes, ~30x
    # faster on the CPU than torch.where(x >= 0, 1., -1.), whose scalar
    # operands take a slow path (torch 2.13, 1000x1000 float32)
    return torch.sign(x).add_(0.5).sign_()


class SignActivation(torch.autograd.Function):
    """sign(x) forward, the hard tanh's gradient backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x.abs() <= 1)
        return _sign(x)

    @staticmethod
    def backward(ctx, grad):
        inside, = ctx.saved_tensors
        return grad * inside


class SignWeight(torch.autograd.Function):
    """sign(W) forward, the gradient unchanged backward."""

    @staticmethod
    def forward(ctx, W):
        return _sign(W)

    @staticmethod
    def backward(ctx, grad):
        return grad


class BinaryLinear(torch.nn.Linear):
    """A dense layer by sign(W), no bias."""

    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out, bias=False)
        torch.nn.init.normal_(self.weight, 0.0, n_in ** -0.5)

    def forward(self, x):
        return F.linear(x, SignWeight.apply(self.weight))


class BinaryConv2d(torch.nn.Conv2d):
    """A 3x3 convolution by sign(W), padding 1, no bias."""

    def __init__(self, c_in, c_out):
        super().__init__(c_in, c_out, 3, padding=1, bias=False)
        torch.nn.init.normal_(self.weight, 0.0, (c_in * 9) ** -0.5)

    def forward(self, x):
        return F.conv2d(x, SignWeight.apply(self.weight), padding=1)


def batch_norm(size, spatial=False):
    kind = torch.nn.BatchNorm2d if spatial else torch.nn.BatchNorm1d
    return kind(size, eps=project_source.bn_eps(), momentum=BN_MOMENTUM)


def clip_weights(model):
    """Clips the binarized layers' real weights to [-1, 1]."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (BinaryLinear, BinaryConv2d)):
                module.weight.clamp_(-1.0, 1.0)


def adam(model, lr, implementation):
    """Adam (Chainer's defaults: betas 0.9, 0.999, eps 1e-8) on every
    parameter; ``implementation``: ``'fused'``, ``'foreach'`` or
    ``'single'`` (PyTorch's loop over tensors)."""
    options = {'fused': {'fused': True}, 'foreach': {'foreach': True},
               'single': {'foreach': False}}[implementation]
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999),
                            eps=1e-8, **options)


def set_threads(threads):
    """``threads`` intra-op threads, one inter-op thread."""
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)

#!/usr/bin/env python
"""PyTorch peer of bench/cnn_step.py: the time of a BinaryConvNet training
step and evaluation batch on random images.

The network of ``net.BinaryConvNet`` for ``--size`` (its layer list read
from ``net.ARCHITECTURES``): each stage's 3x3 convolutions (padding 1, by
sign(W), no bias), each followed by batch normalization and the sign, the
last of a stage by 2x2 max pooling (stride 2, ``ceil_mode``: Chainer's
``cover_all``) before them; the first convolution reads the pixels as they
are; then the hidden dense layers (by sign(W), BN, sign) and the output
layer with BN on its logits; the layers of ``binary_torch``. A step is
softmax cross-entropy, backward, Adam and the weights clipped to [-1, 1],
as bench/cnn_step.py's; an evaluation batch is the forward pass and the
loss in evaluation mode (running BN statistics) without gradients.

After one warm-up step it times ``--steps`` steps and ``--steps``
evaluation batches on one random batch of ``--batch`` images of shape
``--shape`` and prints their medians in bench/cnn_step.py's words::

    train step 0.0512 s, eval batch 0.0187 s (medians of 20)

    make bench-peers
    .venv-peer/bin/python bench/peers/torch_convnet_step.py --size small --threads 2
    .venv-peer/bin/python bench/peers/torch_convnet_step.py --size paper --shape 3 32 32 --batch 25 --steps 8

A benchmark, not a test: it asserts nothing.
"""
import argparse
import os
import statistics
import sys
import time

import project_source


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', choices=sorted(
        project_source.architectures()), default='small')
    parser.add_argument('--shape', type=_positive_int, nargs=3,
                        default=[1, 28, 28], metavar=('C', 'H', 'W'))
    parser.add_argument('--batch', type=_positive_int, default=100)
    parser.add_argument('--steps', type=_positive_int, default=10)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=_positive_int,
                        default=os.cpu_count() or 1,
                        help='torch intra-op threads')
    parser.add_argument('--adam', choices=('fused', 'foreach', 'single'),
                        default='fused',
                        help="PyTorch's Adam implementation")
    return parser.parse_args(argv)


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError('must be positive: {}'.format(text))
    return value


def build_convnet(arch, shape, n_out):
    """The BinaryConvNet of ``arch`` (a value of ``net.ARCHITECTURES``)
    for images of ``shape`` (channels, height, width)."""
    import torch
    import torch.nn.functional as F
    import binary_torch

    class BinaryConvNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            channels, height, width = shape
            self.convs = torch.nn.ModuleList()
            self.conv_norms = torch.nn.ModuleList()
            self.pool_after = []
            for stage in arch['conv']:
                for j, out in enumerate(stage, 1):
                    self.convs.append(binary_torch.BinaryConv2d(channels,
                                                                out))
                    self.conv_norms.append(binary_torch.batch_norm(
                        out, spatial=True))
                    self.pool_after.append(j == len(stage))
                    channels = out
                height, width = (height + 1) // 2, (width + 1) // 2
            sizes = [channels * height * width] + list(arch['fc']) + [n_out]
            self.dense = torch.nn.ModuleList(
                binary_torch.BinaryLinear(a, b)
                for a, b in zip(sizes, sizes[1:]))
            self.dense_norms = torch.nn.ModuleList(
                binary_torch.batch_norm(b) for b in sizes[1:])

        def forward(self, x):
            sign = binary_torch.SignActivation.apply
            for conv, norm, pool in zip(self.convs, self.conv_norms,
                                        self.pool_after):
                x = conv(x)
                if pool:
                    x = F.max_pool2d(x, 2, 2, ceil_mode=True)
                x = sign(norm(x))
            x = x.flatten(1)
            for i, (dense, norm) in enumerate(zip(self.dense,
                                                  self.dense_norms)):
                x = norm(dense(x))
                if i < len(self.dense) - 1:
                    x = sign(x)
            return x

    return BinaryConvNet()


def median_seconds(function, steps):
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(args):
    import torch
    import torch.nn.functional as F
    import binary_torch
    binary_torch.set_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_convnet(project_source.architectures()[args.size],
                          tuple(args.shape), 10)
    optimizer = binary_torch.adam(model, 1e-3, args.adam)
    x = torch.rand(args.batch, *args.shape)
    t = torch.randint(0, 10, (args.batch,))

    def step():
        loss = F.cross_entropy(model(x), t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        binary_torch.clip_weights(model)

    def evaluate():
        with torch.inference_mode():
            F.cross_entropy(model(x), t)

    model.train()
    step()  # warm-up
    train = median_seconds(step, args.steps)
    model.eval()
    return train, median_seconds(evaluate, args.steps), torch.__version__


def main(argv=None):
    args = parse_args(argv)
    try:
        import torch  # NOQA: F401
    except ImportError as e:
        sys.exit('torch_convnet_step.py: error: cannot import torch ({}): '
                 'run make bench-peers and use .venv-peer/bin/python'.format(
                     e))
    train, evaluate, version = run(args)
    print('# PyTorch {} BinaryConvNet {} on {} images, batch {}, {} '
          'thread(s), Adam {}'.format(version, args.size,
                                      'x'.join(map(str, args.shape)),
                                      args.batch, args.threads, args.adam))
    print('train step {:.4f} s, eval batch {:.4f} s (medians of {})'.format(
        train, evaluate, args.steps))
    return 0


if __name__ == '__main__':
    sys.exit(main())

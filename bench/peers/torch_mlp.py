#!/usr/bin/env python
"""PyTorch peer of train_mnist.py's binarized MLP: the same network,
trained the same way, timed epoch by epoch.

The network of ``net.MnistMLP`` with the defaults: 784 pixels in [0, 1]
(not binarized), ``--layers`` hidden layers of ``--units`` units, 10
logits; each layer a product by sign(W) without bias, then batch
normalization, then on hidden layers the sign (hard-tanh straight-through
gradient); the layers of ``binary_torch``. Training as train_mnist.py's
defaults: softmax cross-entropy, Adam (step size ``--lr``, decaying
exponentially to ``--lr-final`` over ``--epochs``, epoch by epoch), the
weights clipped to [-1, 1] after every step, batch ``--batch`` of
shuffled training images; evaluation on the 10,000 test images with the
running BN statistics at batch ``--eval-batch``. MNIST from the
repository's data/mnist.

For each epoch it prints, or with ``--json`` writes on stdout as one JSON
document, the training seconds (the epoch's steps), the evaluation
seconds, the mean training loss and accuracy and the test accuracy.

    make bench-peers
    .venv-peer/bin/python bench/peers/torch_mlp.py --epochs 1 --threads 2
    .venv-peer/bin/python bench/peers/torch_mlp.py --epochs 1 --eval-batch 100 --json

bench/speed.py runs it beside the project's training. A benchmark, not a
test: it asserts nothing.
"""
import argparse
import json
import os
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    positive = _positive_int
    parser.add_argument('--epochs', type=positive, default=1)
    parser.add_argument('--units', type=positive, default=1000)
    parser.add_argument('--layers', type=positive, default=2)
    parser.add_argument('--batch', type=positive, default=100)
    parser.add_argument('--eval-batch', type=positive, default=1000)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--lr-final', type=float, default=1e-5)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=positive,
                        default=os.cpu_count() or 1,
                        help='torch intra-op threads')
    parser.add_argument('--adam', choices=('fused', 'foreach', 'single'),
                        default='fused',
                        help="PyTorch's Adam implementation")
    parser.add_argument('--data-dir', default=None,
                        help='MNIST IDX files (default: data/mnist)')
    parser.add_argument('--json', action='store_true',
                        help='write the records on stdout as JSON')
    return parser.parse_args(argv)


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError('must be positive: {}'.format(text))
    return value


def build_mlp(n_in, units, layers, n_out):
    import torch
    import binary_torch

    class BinaryMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            sizes = [n_in] + [units] * layers + [n_out]
            self.linears = torch.nn.ModuleList(
                binary_torch.BinaryLinear(a, b)
                for a, b in zip(sizes, sizes[1:]))
            self.norms = torch.nn.ModuleList(
                binary_torch.batch_norm(b) for b in sizes[1:])

        def forward(self, x):
            for i, (linear, norm) in enumerate(zip(self.linears,
                                                   self.norms)):
                x = norm(linear(x))
                if i < layers:
                    x = binary_torch.SignActivation.apply(x)
            return x

    return BinaryMLP()


def train_epoch(model, optimizer, x, t, batch, generator):
    """One epoch over shuffled minibatches; ``(mean loss, mean
    accuracy)``."""
    import torch
    import torch.nn.functional as F
    from binary_torch import clip_weights
    model.train()
    order = torch.randperm(len(x), generator=generator)
    loss_sum = torch.zeros(())
    correct = torch.zeros((), dtype=torch.int64)
    steps = 0
    for lo in range(0, len(x) - batch + 1, batch):
        index = order[lo:lo + batch]
        xb, tb = x[index], t[index]
        logits = model(xb)
        loss = F.cross_entropy(logits, tb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clip_weights(model)
        loss_sum += loss.detach()
        correct += (logits.detach().argmax(1) == tb).sum()
        steps += 1
    return float(loss_sum) / steps, float(correct) / (steps * batch)


def evaluate(model, x, t, batch):
    import torch
    model.eval()
    correct = 0
    with torch.inference_mode():
        for lo in range(0, len(x), batch):
            correct += int((model(x[lo:lo + batch]).argmax(1) ==
                            t[lo:lo + batch]).sum())
    return correct / len(x)


def run(args, data):
    import torch
    import binary_torch
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    (x, t), (x_test, t_test) = data['train'], data['test']
    model = build_mlp(x.shape[1], args.units, args.layers, 10)
    optimizer = binary_torch.adam(model, args.lr, args.adam)
    rate = (args.lr_final / args.lr) ** (1.0 / max(1, args.epochs - 1))
    records = []
    for epoch in range(1, args.epochs + 1):
        lr = args.lr * rate ** (epoch - 1)
        for group in optimizer.param_groups:
            group['lr'] = lr
        start = time.perf_counter()
        loss, accuracy = train_epoch(model, optimizer, x, t, args.batch,
                                     generator)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        test_accuracy = evaluate(model, x_test, t_test, args.eval_batch)
        eval_s = time.perf_counter() - start
        records.append({'epoch': epoch, 'lr': lr, 'train_s': train_s,
                        'eval_s': eval_s, 'train_loss': loss,
                        'train_accuracy': accuracy,
                        'test_accuracy': test_accuracy})
        if not args.json:
            print('epoch {}: train {:.2f} s, eval {:.2f} s, loss {:.4f}, '
                  'accuracy {:.4f}, test accuracy {:.4f}'.format(
                      epoch, train_s, eval_s, loss, accuracy,
                      test_accuracy), flush=True)
    return records


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import torch
    except ImportError as e:
        sys.exit('torch_mlp.py: error: cannot import torch ({}): run make '
                 'bench-peers and use .venv-peer/bin/python'.format(e))
    import binary_torch
    import project_source
    binary_torch.set_threads(args.threads)
    try:
        data = project_source.read_mnist(args.data_dir or
                                         project_source.MNIST_DIR)
    except (OSError, ValueError) as e:
        sys.exit('torch_mlp.py: error: cannot read MNIST: {}'.format(e))
    records = run(args, {split: binary_torch.tensors(*arrays)
                         for split, arrays in data.items()})
    header = {'peer': 'bench/peers/torch_mlp.py', 'torch': torch.__version__,
              'threads': args.threads, 'units': args.units,
              'layers': args.layers, 'batch': args.batch,
              'eval_batch': args.eval_batch, 'adam': args.adam}
    if args.json:
        json.dump(dict(header, records=records), sys.stdout)
        sys.stdout.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())

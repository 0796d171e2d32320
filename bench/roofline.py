#!/usr/bin/env python
"""The roofline of this machine for packed networks: how many binary
multiply-accumulates (bit MACs) per second its cores do, how fast its
caches and memory deliver words, and what that allows each packed
network in images per second.

Measured with numba loops over ``uint64`` words (LLVM turns them into
VPOPCNTQ on AVX-512 machines that have VPOPCNTDQ, into POPCNT
elsewhere), each the best of ``--repeats`` runs:

* popcount: :math:`\\sum_k \\mathrm{popcount}(w_k)` over words in L1
  (16 KiB per core);
* XOR-popcount: :math:`\\sum_k \\mathrm{popcount}(x \\oplus w_k)`, one
  word ``x`` against a stream of weight words in L1, the inner loop of a
  packed dense layer; each word is 64 bit MACs;
* bandwidth: the words of a 512 KiB array per core (L2) and of a 256 MiB
  one (memory) summed (a load and an add per word).

On one core and on ``--threads`` (default: numba's threads), each core
its own words. A network's ceiling at batch ``B`` is

.. math::

    \\min\\left(\\frac{R}{m}, \\frac{\\mathrm{BW_{L2}}}{b / B}\\right)

images/s, with :math:`R` the XOR-popcount rate, :math:`m` the network's
bit-plane MACs per image (:func:`qnn.packed.summary.bit_macs`: a first
layer on 8-bit pixels counts 8 planes) and :math:`b` its packed weight
bytes, read from L2 once per batch (they fit there: the MLP 2x1000's are
230 KB).

    .venv/bin/python bench/roofline.py                   # the machine
    .venv/bin/python bench/roofline.py network.bnn ...   # and ceilings

A benchmark, not a test: it asserts nothing.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from qnn.backends import inference_threads  # NOQA: E402
inference_threads.configure()  # before NumPy and numba start

import numba  # NOQA: E402
import numpy  # NOQA: E402

from qnn.backends import xnor_kernels  # NOQA: E402
from qnn.packed import format as packed_format  # NOQA: E402
from qnn.packed import summary as packed_summary  # NOQA: E402

WORD_BYTES = 8
L1_WORDS = 16 * 1024 // WORD_BYTES
L2_WORDS = 512 * 1024 // WORD_BYTES
DRAM_WORDS = 256 * 1024 * 1024 // WORD_BYTES

_kernels = None


def kernels():
    """The measuring loops (compiled once): each takes ``words`` ``(T,
    n)`` and a number of passes, core ``t`` summing row ``t``, and returns
    what it summed (so that nothing is optimized away)."""
    global _kernels
    if _kernels is not None:
        return _kernels
    popcount = xnor_kernels.popcount_intrinsic()

    @numba.njit(parallel=True)
    def popcounts(words, passes):
        total = numpy.zeros(words.shape[0], numpy.int64)
        for t in numba.prange(words.shape[0]):
            row = words[t]
            s = 0
            for _ in range(passes):
                for k in range(row.shape[0]):
                    s += popcount(row[k])
            total[t] = s
        return total.sum()

    @numba.njit(parallel=True)
    def xor_popcounts(words, passes):
        total = numpy.zeros(words.shape[0], numpy.int64)
        for t in numba.prange(words.shape[0]):
            row = words[t]
            s = 0
            for p in range(passes):
                x = numpy.uint64(p) * numpy.uint64(0x9E3779B97F4A7C15)
                for k in range(row.shape[0]):
                    s += popcount(x ^ row[k])
            total[t] = s
        return total.sum()

    @numba.njit(parallel=True)
    def word_sums(words, passes):
        total = numpy.zeros(words.shape[0], numpy.uint64)
        for t in numba.prange(words.shape[0]):
            row = words[t]
            s = numpy.uint64(0)
            for _ in range(passes):
                for k in range(row.shape[0]):
                    s += row[k]
            total[t] = s
        return total.sum()

    _kernels = {'popcount': popcounts, 'xor_popcount': xor_popcounts,
                'sum': word_sums}
    return _kernels


def best_seconds(function, repeats):
    """The shortest of ``repeats`` timed calls of ``function()``."""
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def rate(kernel, threads, n, passes, repeats, seed=0):
    """Words per second of ``kernel`` on ``threads`` cores, each over its
    own ``n`` words ``passes`` times."""
    words = numpy.random.default_rng(seed).integers(
        0, numpy.iinfo(numpy.uint64).max, (threads, n), numpy.uint64,
        endpoint=True)
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        kernel(words, 1)  # compiled and in cache
        seconds = best_seconds(lambda: kernel(words, passes), repeats)
    finally:
        numba.set_num_threads(previous)
    return threads * n * passes / seconds


def measure(threads, repeats=5, scale=1.0):
    """The machine's rates, by number of cores (1 and ``threads``): bit
    MACs/s of popcount and XOR-popcount, bytes/s of L2 and memory.
    ``scale`` multiplies the passes (smaller: a quicker, rougher
    measurement)."""
    k = kernels()
    l1 = max(1, int(20000 * scale))
    l2 = max(1, int(600 * scale))
    out = {}
    for t in sorted({1, threads}):
        out[t] = {
            'popcount': 64 * rate(k['popcount'], t, L1_WORDS, l1, repeats),
            'xor_popcount': 64 * rate(k['xor_popcount'], t, L1_WORDS, l1,
                                      repeats),
            'l2_bytes': WORD_BYTES * rate(k['sum'], t, L2_WORDS, l2,
                                          repeats),
            'dram_bytes': WORD_BYTES * rate(
                k['sum'], t, DRAM_WORDS // t, 1, max(2, repeats // 2)),
        }
    return out


def peak(rates, threads):
    """The rates of ``threads`` cores for a ceiling: each the larger of
    the cores measured together and one core's times ``threads`` (with
    another process running, the cores measured together come out low:
    0.50e12 against 2 x 1.11e12 bit MACs/s on the 2-core AMD EPYC,
    2026-12-07)."""
    return {key: max(value, threads * rates[1][key])
            for key, value in rates[threads].items()}


def weight_bytes(network):
    """Bytes of the packed weights of ``network`` (what each image reads
    at batch 1)."""
    return sum(layer.weights.nbytes for layer in network.layers)


def ceiling(network, rates, batch):
    """Images/s that ``rates`` (one entry of :func:`measure`) allow
    ``network`` at ``batch`` images a call: the compute bound of the
    bit-plane MACs, or the L2 bandwidth of reading the weights once per
    call, whichever is lower."""
    compute = rates['xor_popcount'] / packed_summary.bit_macs(network)
    memory = rates['l2_bytes'] * batch / weight_bytes(network)
    return min(compute, memory)


def report(rates, networks):
    print('| cores | popcount bit/s | XOR-popcount bit MACs/s | L2 GB/s | '
          'memory GB/s |')
    print('|---:|---:|---:|---:|---:|')
    for t, r in sorted(rates.items()):
        print('| {} | {:.3g} | {:.3g} | {:.1f} | {:.1f} |'.format(
            t, r['popcount'], r['xor_popcount'], r['l2_bytes'] / 1e9,
            r['dram_bytes'] / 1e9))
    if not networks:
        return
    print()
    print('ceilings from each row\'s rates, the last by peak(): the larger '
          'of the cores measured together and one core\'s times the cores')
    cores = sorted(rates)
    print('| network | bit MACs/image | weight B | ' + ' | '.join(
        'ceiling {} core{} batch {} images/s'.format(t, 's' if t > 1 else '',
                                                     b)
        for t in cores for b in (1000, 1)) + ' |')
    print('|---|---:|---:|' + '---:|' * (2 * len(cores)))
    for name, network in networks:
        print('| {} | {} | {} | {} |'.format(
            name, packed_summary.bit_macs(network), weight_bytes(network),
            ' | '.join('{:.0f}'.format(ceiling(network, peak(rates, t), b))
                       for t in cores for b in (1000, 1))))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('networks', nargs='*', metavar='NETWORK.bnn')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--repeats', type=int, default=5)
    options = parser.parse_args(argv)
    threads = options.threads or numba.get_num_threads()
    if threads < 1 or threads > numba.config.NUMBA_NUM_THREADS:
        parser.error('--threads must be 1 to {}'.format(
            numba.config.NUMBA_NUM_THREADS))
    networks = []
    for path in options.networks:
        try:
            networks.append((path, packed_format.load(path)))
        except (OSError, packed_format.PackedFileError) as e:
            sys.exit('{}: {} (make one with export.py)'.format(path, e))
    report(measure(threads, options.repeats), networks)
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""bench/roofline.py: its measuring loops sum what they say, and a
network's ceiling is the lower of its compute and L2 bounds."""
import os
import sys

import numpy

from helpers import ROOT
from helpers import random_network

sys.path.append(os.path.join(ROOT, 'bench'))

import roofline  # NOQA: E402


def test_loops_sum_the_words_of_every_core():
    words = numpy.random.default_rng(0).integers(
        0, 2 ** 63, (2, 100), numpy.uint64)
    k = roofline.kernels()
    ones = int(numpy.bitwise_count(words).sum())
    assert k['popcount'](words, 3) == 3 * ones
    expected = sum(
        int(numpy.bitwise_count(words ^ numpy.uint64(
            (p * 0x9E3779B97F4A7C15) % 2 ** 64)).sum()) for p in range(3))
    assert k['xor_popcount'](words, 3) == expected
    assert k['sum'](words, 2) == numpy.uint64(
        2 * int(words.sum(dtype=numpy.uint64)) % 2 ** 64)


def test_ceiling_is_the_lower_bound():
    network = random_network(numpy.random.default_rng(1), (784, 100, 10))
    macs = 8 * 784 * 100 + 100 * 10
    weights = (100 * 13 + 10 * 2) * 8
    rates = {'xor_popcount': 1e12, 'l2_bytes': 1e9}
    assert roofline.weight_bytes(network) == weights
    # batch 1000: compute bound; batch 1: the weights read per image
    assert roofline.ceiling(network, rates, 1000) == 1e12 / macs
    assert roofline.ceiling(network, rates, 1) == 1e9 / weights


def test_peak_takes_the_larger_rate():
    rates = {1: {'xor_popcount': 1e12, 'l2_bytes': 1e11},
             2: {'xor_popcount': 5e11, 'l2_bytes': 3e11}}
    assert roofline.peak(rates, 2) == {'xor_popcount': 2e12,
                                       'l2_bytes': 3e11}
    assert roofline.peak(rates, 1) == rates[1]

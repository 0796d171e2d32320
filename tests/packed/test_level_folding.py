"""k-bit layers folded (qnn.packed.level_folding): the weight levels are the
trained network's quantized weights."""
import numpy

from qnn.packed import bits as packed_bits
from qnn.packed import level_folding
import qst


def test_weight_levels_are_the_quantized_weights():
    W = numpy.linspace(-1.5, 1.5, 61, dtype=numpy.float32)[None]
    for bits in (1, 2, 3, 4):
        v = level_folding.weight_levels(W, bits)
        assert v.min() == 0 and v.max() == packed_bits.n_levels(bits)
        numpy.testing.assert_array_equal(
            (-1 + 2 * v / packed_bits.n_levels(bits)).astype(numpy.float32),
            qst.quantize(W, bits, 'linear'))

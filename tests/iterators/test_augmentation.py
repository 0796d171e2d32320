import unittest

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
from chainer import testing

from qnn.iterators.array_iterator import concat_batch
from qnn.iterators.augmentation import RandomShiftFlip
from qnn.iterators.augmentation import shift_and_flip

from helpers import BACKENDS, seed_generators


def moved_reference(image, dy, dx, mirrored):
    """``image`` (C, H, W) mirrored (if so), then shifted by (dy, dx) with
    the edges repeated: padding and slicing, not the gather under test."""
    c, h, w = image.shape
    if mirrored:
        image = image[:, :, ::-1]
    p = max(h, w)
    padded = numpy.pad(image, ((0, 0), (p, p), (p, p)), mode='edge')
    return padded[:, p - dy:p - dy + h, p - dx:p - dx + w]


def moves_of(x, y, max_shift, flip):
    """For each image, the (dy, dx, mirrored) that the reference maps it to
    ``y`` with (all of them, when several agree)."""
    moves = []
    for image, out in zip(x, y):
        moves.append([
            (dy, dx, m)
            for dy in range(-max_shift, max_shift + 1)
            for dx in range(-max_shift, max_shift + 1)
            for m in ((False, True) if flip else (False,))
            if numpy.array_equal(moved_reference(image, dy, dx, m), out)])
    return moves


@testing.parameterize(*testing.product({
    'max_shift': [0, 1, 2],
    'flip': [False, True],
    'shape': [(1, 6, 5), (3, 4, 4)],
}))
@testing.inject_backend_tests(None, BACKENDS)
class TestShiftAndFlip(unittest.TestCase):

    def test_each_image_is_a_move_of_its_own(self, backend_config):
        seed_generators(0)
        n = 400
        # distinct values everywhere: a move is found from the output
        x = numpy.random.permutation(
            n * int(numpy.prod(self.shape))).astype(numpy.float32)
        x = x.reshape((n,) + self.shape)
        y = shift_and_flip(backend_config.get_array(x), self.shape,
                           self.max_shift, self.flip)
        y = chainer.backend.CpuDevice().send(y)
        assert y.shape == x.shape and y.dtype == x.dtype
        moves = moves_of(x, y, self.max_shift, self.flip)
        assert all(moves), 'an output is no allowed move of its image'
        # every move is drawn: (2 s + 1)^2 shifts, each mirrored or not
        seen = {found[0] for found in moves if len(found) == 1}
        assert len(seen) == (2 * self.max_shift + 1) ** 2 * (
            2 if self.flip else 1)

    def test_flat_rows(self, backend_config):
        # the MLP's images are rows of C * H * W values
        seed_generators(1)
        x = numpy.random.uniform(-1, 1, (50,) + self.shape).astype(
            numpy.float32)
        seed_generators(2)
        y = shift_and_flip(backend_config.get_array(x), self.shape,
                           self.max_shift, self.flip)
        seed_generators(2)
        y_flat = shift_and_flip(backend_config.get_array(x.reshape(50, -1)),
                                self.shape, self.max_shift, self.flip)
        cpu = chainer.backend.CpuDevice()
        assert y_flat.shape == (50, x[0].size)
        numpy.testing.assert_array_equal(cpu.send(y_flat),
                                         cpu.send(y).reshape(50, -1))


class TestShiftAndFlipIdentity(unittest.TestCase):

    def test_no_shift_no_flip_is_a_copy(self):
        x = numpy.random.uniform(size=(7, 1, 5, 5)).astype(numpy.float32)
        y = shift_and_flip(x, (1, 5, 5))
        numpy.testing.assert_array_equal(y, x)
        assert not numpy.shares_memory(x, y)

    def test_input_is_not_modified(self):
        x = numpy.random.uniform(size=(7, 1, 5, 5)).astype(numpy.float32)
        x0 = x.copy()
        shift_and_flip(x, (1, 5, 5), 2, True)
        numpy.testing.assert_array_equal(x, x0)


class TestRandomShiftFlip(unittest.TestCase):

    def test_moves_images_keeps_labels(self):
        x = numpy.arange(20 * 16, dtype=numpy.float32).reshape(20, 16)
        t = numpy.arange(20, dtype=numpy.int32)
        converter = RandomShiftFlip(concat_batch, (1, 4, 4), 1, True)
        numpy.random.seed(0)
        y, t2 = converter([(a, b) for a, b in zip(x, t)])
        numpy.testing.assert_array_equal(t2, t)
        assert y.shape == x.shape
        assert not numpy.array_equal(y, x)
        assert all(moves_of(x.reshape(20, 1, 4, 4), y.reshape(20, 1, 4, 4),
                            1, True))

    def test_negative_shift(self):
        with pytest.raises(ValueError):
            RandomShiftFlip(concat_batch, (1, 4, 4), -1)


testing.run_module(__name__, __file__)

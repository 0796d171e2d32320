import math

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

from qnn.optimizers import wage_sgd


def ref_mean_update(g, lr, kg, kr):
    # the unrounded step, its randomizer's rounding (halves up) included
    m = float(numpy.abs(g).max())
    s = 1.0 if m == 0 else 2.0 ** round(math.log2(m))
    r = 2.0 ** (1 - kr)
    n = numpy.floor(lr * g.astype(numpy.float64) / s / r + 0.5) * r
    return n * 2.0 ** (1 - kg)


@pytest.mark.parametrize('lr,kr', [(1.0, 12), (0.5, 12), (1.0, 8), (3, 16)])
def test_mean_of_the_stochastic_update_is_the_unrounded_update(lr, kr):
    rng = numpy.random.RandomState(0)
    g = rng.standard_normal(20).astype('f') * 1e-3
    numpy.random.seed(1)
    n = 20000
    mean = sum(wage_sgd.wage_update(g, lr, 8, kr).astype(numpy.float64)
               for _ in range(n)) / n
    expected = ref_mean_update(g, lr, 8, kr)
    numpy.testing.assert_allclose(
        wage_sgd.wage_update(g, lr, 8, kr, stochastic=False), expected,
        rtol=1e-6, atol=1e-9)
    # each step is one of the two neighbouring multiples of sigma(kG): the
    # standard deviation of the mean is at most sigma / (2 sqrt(n))
    sigma = 2.0 ** -7
    numpy.testing.assert_allclose(mean, expected, atol=5 * sigma / (
        2 * math.sqrt(n)))
    # and the randomizer's rounding moves it by at most half its step
    unrounded = lr * g / 2.0 ** round(math.log2(abs(g).max())) * sigma
    assert numpy.abs(expected - unrounded).max() <= \
        sigma * 2.0 ** (1 - kr) / 2 + 1e-12


def test_steps_are_integer_multiples_of_sigma():
    g = numpy.random.RandomState(2).standard_normal((6, 5)).astype('f')
    d = wage_sgd.wage_update(g, 1.0, 8, 12) / 2.0 ** -7
    numpy.testing.assert_array_equal(d, numpy.round(d))
    # |eta x| <= sqrt(2): at most 2 steps of sigma
    assert numpy.abs(d).max() <= 2
    # the signs follow the gradient's (or the step is 0)
    assert (numpy.sign(d) * numpy.sign(g) >= 0).all()


def test_zero_gradient_gives_zero_step_and_nan_stays_nan():
    z = wage_sgd.wage_update(numpy.zeros(4, 'f'), 1.0, 8, 8)
    assert numpy.isfinite(z).all() and not z.any()
    g = numpy.ones(4, 'f')
    g[2] = numpy.nan
    assert numpy.isnan(wage_sgd.wage_update(g, 1.0, 8, 8)).all()


def test_optimizer_steps_and_clips():
    link = chainer.Link()
    with link.init_scope():
        link.W = chainer.Parameter(numpy.array([0.0, 0.99, -0.99, 0.5], 'f'))
    opt = wage_sgd.WageSGD(alpha=1.0, gradient_bits=8, randomizer_bits=12)
    opt.setup(link)
    link.W.grad = numpy.array([0.0, -1.0, 1.0, 1.0], 'f')
    opt.update()
    bound = 1 - 2.0 ** -7
    # |x| = 1 for the last three: eta x rounds to exactly +-1, one step each
    numpy.testing.assert_array_equal(
        link.W.array, [0.0, bound, -bound, 0.5 - 2.0 ** -7])


def test_32_gradient_bits_is_the_plain_step():
    g = numpy.random.RandomState(4).standard_normal(7).astype('f')
    numpy.testing.assert_array_equal(wage_sgd.wage_update(g, 0.5, 32, 8),
                                     g * numpy.float32(0.5))


def test_alpha_is_the_learning_rate_hyperparameter():
    opt = wage_sgd.WageSGD(alpha=1.0)
    opt.alpha = 0.5
    assert opt.hyperparam.alpha == 0.5


@pytest.mark.parametrize('kwargs', [{'gradient_bits': 1},
                                    {'randomizer_bits': 0},
                                    {'randomizer_bits': 33}])
def test_bad_bits_are_refused(kwargs):
    with pytest.raises(ValueError):
        wage_sgd.WageSGD(**kwargs)

import unittest

import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer
import chainer.functions as F
import chainer.links as L
from chainer import testing

import net
from qnn.links.shift_batch_normalization import ShiftBatchNormalization
from qnn.training.extensions import population_statistics

from helpers import BACKENDS


class TwoNormalizations(chainer.Chain):

    """x -> BN -> tanh -> linear -> BN: the second layer's statistics depend
    on the first's minibatch normalization."""

    def __init__(self):
        super(TwoNormalizations, self).__init__()
        with self.init_scope():
            self.bn1 = L.BatchNormalization(4, dtype=numpy.float64)
            self.fc = L.Linear(4, 3, initialW=numpy.random.uniform(
                -1, 1, (3, 4)), nobias=True)
            self.bn2 = L.BatchNormalization(3, dtype=numpy.float64)

    def forward(self, x):
        return self.bn2(self.fc(F.tanh(self.bn1(x))))


def data(n, seed=0):
    rng = numpy.random.RandomState(seed)
    x = rng.normal(2.0, 3.0, (n, 4))
    return chainer.datasets.TupleDataset(x, numpy.zeros(n, numpy.int32))


def expected_statistics(model, x, batch_size):
    """Algorithm 2 in NumPy: per minibatch, each layer's mean and unbiased
    variance with every layer normalized by its minibatch statistics."""
    eps = model.bn1.eps
    means = {'bn1': [], 'bn2': []}
    variances = {'bn1': [], 'bn2': []}
    gamma1, beta1 = model.bn1.gamma.array, model.bn1.beta.array
    W = model.fc.W.array
    for start in range(0, len(x) - batch_size + 1, batch_size):
        h = x[start:start + batch_size]
        means['bn1'].append(h.mean(0))
        variances['bn1'].append(h.var(0, ddof=1))
        h = numpy.tanh(gamma1 * (h - h.mean(0)) / numpy.sqrt(h.var(0) + eps)
                       + beta1).dot(W.T)
        means['bn2'].append(h.mean(0))
        variances['bn2'].append(h.var(0, ddof=1))
    return ({k: numpy.mean(v, 0) for k, v in means.items()},
            {k: numpy.mean(v, 0) for k, v in variances.items()})


@testing.inject_backend_tests(None, BACKENDS)
@testing.parameterize(*testing.product({'n_images': [60, 80, 99]}))
class TestEstimate(unittest.TestCase):

    def test_means_of_minibatch_statistics(self, backend_config):
        numpy.random.seed(0)
        model = TwoNormalizations()
        # trained-looking parameters and stale running averages
        model.bn1.gamma.array[:] = numpy.random.uniform(0.5, 2, 4)
        model.bn1.beta.array[:] = numpy.random.uniform(-1, 1, 4)
        model.bn1.avg_mean[:] = 7.0
        model.bn2.avg_var[:] = 9.0
        dataset = data(100)
        x = dataset._datasets[0]
        # whole minibatches of 20 among the first n_images
        mean, var = expected_statistics(
            model, x[:self.n_images // 20 * 20], 20)
        model.to_device(backend_config.device)
        population_statistics.estimate(model, dataset, self.n_images, 20,
                                       backend_config.device)
        cpu = chainer.get_device('@numpy')
        for name in ('bn1', 'bn2'):
            link = getattr(model, name)
            numpy.testing.assert_allclose(cpu.send(link.avg_mean),
                                          mean[name], rtol=1e-10, atol=1e-12)
            numpy.testing.assert_allclose(cpu.send(link.avg_var),
                                          var[name], rtol=1e-10, atol=1e-12)


def test_decay_and_random_state_are_restored():
    model = TwoNormalizations()
    model.bn1.decay = 0.75
    numpy.random.seed(3)
    expected = numpy.random.uniform(size=5)
    numpy.random.seed(3)
    population_statistics.estimate(model, data(40), 40, 20)
    assert (model.bn1.decay, model.bn2.decay) == (0.75, 0.9)
    numpy.testing.assert_array_equal(numpy.random.uniform(size=5), expected)


def test_parameters_do_not_change():
    model = TwoNormalizations()
    model.cleargrads()
    before = {name: param.array.copy()
              for name, param in model.namedparams()}
    population_statistics.estimate(model, data(40), 40, 20)
    for name, param in model.namedparams():
        numpy.testing.assert_array_equal(param.array, before[name])
        assert param.grad is None  # no backward pass either


def test_images_after_the_first_n_are_not_read():
    model_a, model_b = TwoNormalizations(), TwoNormalizations()
    model_b.copyparams(model_a)
    a, b = data(100), data(100)
    b._datasets[0][60:] = 1e6
    population_statistics.estimate(model_a, a, 60, 20)
    population_statistics.estimate(model_b, b, 60, 20)
    numpy.testing.assert_array_equal(model_a.bn2.avg_var, model_b.bn2.avg_var)


@pytest.mark.parametrize('n_images', [19, 101])
def test_sizes_outside_one_minibatch_to_the_dataset(n_images):
    with pytest.raises(ValueError, match='n_images={}'.format(n_images)):
        population_statistics.estimate(TwoNormalizations(), data(100),
                                       n_images, 20)


def test_normalization_links_of_the_networks():
    cnn = net.BinaryConvNet(10, 'small')
    found = population_statistics.normalization_links(cnn)
    assert sorted(link.name for link in found) == sorted(
        name[1:] for name, _ in cnn.namedlinks(skipself=True)
        if name.startswith('/bn'))
    # shift-based BN in the hidden layers, Chainer's on the output
    mlp = net.MnistMLP(784, 16, 10, n_layers=3, bn='shift')
    found = population_statistics.normalization_links(mlp)
    assert [type(link) for link in found].count(ShiftBatchNormalization) == 3
    assert len(found) == 4


def test_extension_runs_before_the_evaluators():
    assert (population_statistics.PopulationStatistics.priority >
            chainer.training.extensions.Evaluator.priority)

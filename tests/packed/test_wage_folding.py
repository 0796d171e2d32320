"""WAGE's LeNet-5 folded into packed layers (qnn.packed.wage_folding): the
input levels and unit thresholds against WAGE's quantizers on every value,
and the packed logits against Chainer's, to the bit."""
import numpy
import pytest

import chainer

from qnn import datasets
from qnn.datasets import mnist
from qnn.functions import wage_quantizers
from qnn.packed import folding
from qnn.packed import format as packed_format
from qnn.packed import forward as packed_forward
from qnn.packed import wage_folding
from qnn.training import options as train_options
from qnn.utils.pixels import PIXEL_MAX
import train_mnist


@pytest.mark.parametrize('input_range', sorted(datasets.INPUT_RANGES))
def test_pixel_levels_are_the_input_quantizer(input_range):
    pixels = datasets.INPUT_RANGES[input_range]
    thresholds, u0 = wage_folding.pixel_levels(pixels['scale'],
                                               pixels['shift'])
    p = numpy.arange(PIXEL_MAX + 1)
    x = p.astype(numpy.float32) * numpy.float32(pixels['scale'] / PIXEL_MAX)
    x += numpy.float32(pixels['shift'])
    expected = wage_quantizers.quantize(x, 2)
    u = u0 + sum((p >= t).astype(int) for t in thresholds)
    numpy.testing.assert_array_equal(u * 0.5, expected)
    assert len(set(u)) == (3 if input_range == 'symmetric' else 2)


def test_pixel_levels_refuse_a_constant_input():
    # pixels in [0, 0.2]: every one quantizes to 0
    with pytest.raises(folding.FoldingError):
        wage_folding.pixel_levels(0.2, 0.0)


@pytest.mark.parametrize('alpha', [1.0, 2.0, 4.0, 8.0, 16.0])
def test_unit_threshold_is_the_quantizer_on_every_sum(alpha):
    n = 150
    T = wage_folding.unit_thresholds(alpha, n)
    S = numpy.arange(-n, n + 1)
    h = numpy.maximum(S * 0.5 / alpha, 0).astype(numpy.float32)
    on = wage_quantizers.quantize(h, 2) == numpy.float32(0.5)
    numpy.testing.assert_array_equal(S >= T, on)
    assert -n < T <= n  # some sums on, some off


def wage_model(seed):
    args = train_options.parse_args(['--recipe', 'wage-seed'])
    numpy.random.seed(seed)
    return args, train_mnist.build_model(args).predictor


@pytest.mark.parametrize('seed', [0, 1])
def test_folded_logits_are_chainers(seed):
    args, predictor = wage_model(seed)
    # spread the weights: some exactly 0 (sign +1) and both signs
    for _, param in predictor.namedparams():
        param.array[...] = numpy.random.RandomState(seed).uniform(
            -1, 1, param.shape).round(1)
    params = {name.lstrip('/'): param.array
              for name, param in predictor.namedparams()}
    pixels = datasets.INPUT_RANGES[args.input_range]
    layers, thresholds = wage_folding.fold_wage(
        params, 'seed', (1, 28, 28), 10, pixels['scale'], pixels['shift'])
    assert [layer.kind for layer in layers] == [
        'conv_pixels', 'conv_xnor', 'xnor', 'xnor', 'xnor']
    network = packed_format.decode(packed_format.encode(
        packed_format.PackedNetwork(layers, {
            'size': 784, 'shape': [1, 28, 28], 'dataset': 'mnist',
            'pixel_bits': 8, 'scale': PIXEL_MAX / pixels['scale'],
            'shift': pixels['shift'], 'pixel_thresholds': thresholds})))
    images = mnist.load_raw()['test'][0][:300]
    x = images.astype(numpy.float32)
    x *= pixels['scale'] / PIXEL_MAX
    x += numpy.float32(pixels['shift'])
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        expected = predictor(x).array
    for backend in ('numpy', 'numba'):
        logits = packed_forward.forward(network, images, backend)
        numpy.testing.assert_array_equal(logits, expected)
    # the hidden units are not constant: the logits differ between images
    assert len(numpy.unique(expected.argmax(axis=1))) > 1


def test_a_missing_layer_is_named():
    _, predictor = wage_model(0)
    params = {name.lstrip('/'): param.array
              for name, param in predictor.namedparams()
              if not name.startswith('/fc2')}
    with pytest.raises(folding.MissingParameter) as e:
        wage_folding.fold_wage(params, 'seed', (1, 28, 28), 10, 2.0, -1.0)
    assert 'fc2/W' in str(e.value)

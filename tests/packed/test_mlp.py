"""A trained MnistMLP folded (qnn.packed.mlp): the layer kinds of every
depth and bit width, and parameters that are not those of the MLP."""
import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

import net
from qnn.packed import folding
from qnn.packed import forward as packed_forward
from qnn.packed import mlp
import qst


def parameters(model):
    """The predictor's arrays by name, as a snapshot holds them."""
    serializer = chainer.serializers.DictionarySerializer()
    serializer.save(model)
    return serializer.target


def test_binarized_mlp_of_three_hidden_layers():
    model = net.MnistMLP(20, 30, 4, n_layers=3)
    layers = mlp.fold_mlp(parameters(model), [20, 30, 30, 30, 4], 255., 0.,
                          model.b1.eps, False)
    assert [(layer.kind, layer.output) for layer in layers] == [
        ('planes', 'sign'), ('xnor', 'sign'), ('xnor', 'sign'),
        ('xnor', 'affine')]
    assert [(layer.n_in, layer.n_out) for layer in layers] == [
        (20, 30), (30, 30), (30, 30), (30, 4)]


def test_k_bit_mlp_layers_carry_their_bits():
    model = net.MnistMLP(20, 30, 4, qst.Quantization(2, 3))
    layers = mlp.fold_mlp_levels(parameters(model), [20, 30, 30, 4], 2, 3,
                                 255., 0., model.b1.eps, False)
    assert [layer.kind for layer in layers] == [
        'levels_pixels', 'levels', 'levels']
    assert [layer.levels for layer in layers] == [
        {'weight_bits': 2, 'input_bits': 8, 'output_bits': 3},
        {'weight_bits': 2, 'input_bits': 3, 'output_bits': 3},
        {'weight_bits': 2, 'input_bits': 3, 'output_bits': None}]


def test_folded_mlp_predicts_as_the_model():
    rng = numpy.random.RandomState(4)
    model = net.MnistMLP(20, 64, 4)
    for link in (model.b1, model.b2, model.b3):  # statistics of use
        link.avg_mean[:] = rng.normal(0, 2, link.avg_mean.shape)
        link.avg_var[:] = rng.uniform(1, 9, link.avg_var.shape)
    layers = mlp.fold_mlp(parameters(model), [20, 64, 64, 4], 255., 0.,
                          model.b1.eps, False)
    pixels = rng.randint(0, 256, (200, 20)).astype(numpy.uint8)
    sums = packed_forward.layer_sums(layers, pixels, 'numpy')
    logits = packed_forward.affine_logits(sums, layers[-1])
    with chainer.using_config('train', False):
        expected = model(pixels.astype(numpy.float32) / 255).array
    assert (logits.argmax(axis=1) == expected.argmax(axis=1)).mean() > 0.98


def test_parameters_of_another_network_are_named():
    params = parameters(net.MnistMLP(20, 30, 4))
    with pytest.raises(folding.MissingParameter, match='--unit 31'):
        mlp.check_parameters(params, [20, 31, 31, 4])
    del params['l2/W']
    with pytest.raises(folding.MissingParameter, match='has no l2/W'):
        mlp.check_parameters(params, [20, 30, 30, 4])

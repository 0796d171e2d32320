"""The types of train_mnist.py's options (qnn.training.option_types): each
takes the values it should and refuses the others with the reason."""
import argparse

import pytest

from qnn.training import option_types

from helpers import ROOT

CASES = [
    (option_types.integer, ['0', '-3', '12'], ['1.5', 'x', '', '1e3']),
    (option_types.positive_int, ['1', '600'], ['0', '-1', '2.0']),
    (option_types.non_negative_int, ['0', '3'], ['-1', 'none']),
    (option_types.seed, ['0', str(2 ** 32 - 1)], ['-1', str(2 ** 32)]),
    (option_types.frequency, ['-1', '1', '5'], ['0', '-2']),
    (option_types.number, ['0', '-1.5', '1e-3'], ['x', '']),
    (option_types.positive_float, ['1e-3', '2'], ['0', '-1', 'inf', 'nan']),
    (option_types.fraction, ['0', '0.5', '0.999'], ['1', '-0.1', 'nan']),
    (option_types.bits, ['1', '8', '32'], ['0', '33', '2.5']),
    (option_types.gradient_bits, ['2', '32'], ['1', '33']),
]


@pytest.mark.parametrize('kind, good, bad', CASES)
def test_values(kind, good, bad):
    for text in good:
        kind(text)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            kind(text)


def test_snapshot_path(tmp_path):
    path = tmp_path / 'snapshot_iter_10'
    path.write_bytes(b'x')
    assert option_types.snapshot_path(str(path)) == str(path)
    assert option_types.snapshot_path('auto') == 'auto'
    with pytest.raises(argparse.ArgumentTypeError, match='no such file'):
        option_types.snapshot_path(str(tmp_path / 'none'))
    with pytest.raises(argparse.ArgumentTypeError, match='not a file'):
        option_types.snapshot_path(ROOT)

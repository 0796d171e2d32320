"""A run, snapshot and packed file written before the package layout.

tests/data/written-before-package/ holds files that the code of commit
1f48145 (every module at the repository root, before the move into qnn/)
wrote: config.json, log and snapshot_iter_10 of a 784-16-16-10 MLP
trained for one epoch, and network.bnn, export.py's file of that snapshot
(its README.md gives the commands). Today's code must resume the run,
export the snapshot to the same network and run the old packed file. Each
test works on a copy: nothing is written into tests/data.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy
import pytest

import export
from qnn.datasets import mnist
from qnn.packed import format as packed_format
from qnn.packed import forward as packed_forward
import train_mnist

from helpers import ROOT, chainer_predictions

LEGACY = os.path.join(ROOT, 'tests', 'data', 'written-before-package')
SNAPSHOT = 'snapshot_iter_10'
# the options of the old run (README.md); a resumed run must repeat them
RUN = ['--unit', '16', '--train-subset', '500', '--test-subset', '200',
       '--batchsize', '50', '--noplot']
# what the old inference.py printed for network.bnn (README.md)
OLD_ACCURACY = '0.2252'


@pytest.fixture
def legacy(tmp_path):
    """A copy of the old run's directory."""
    directory = tmp_path / 'legacy'
    shutil.copytree(LEGACY, str(directory))
    return directory


def read_log(directory):
    with open(os.path.join(str(directory), 'log')) as f:
        return json.load(f)


def test_the_old_run_resumes(legacy, capsys):
    snapshot = str(legacy / SNAPSHOT)
    capsys.readouterr()
    assert train_mnist.main(['--resume', snapshot, '--epoch', '2',
                             '--out', str(legacy)] + RUN) == 0
    assert '# resume: {} (iteration 10, epoch 1)'.format(snapshot) \
        in capsys.readouterr().out
    log = read_log(legacy)
    assert [entry['epoch'] for entry in log] == [0, 1, 2]
    # the old run's entries come back from its snapshot as it logged them
    assert log[:2] == read_log(LEGACY)
    assert os.path.isfile(str(legacy / 'snapshot_iter_20'))
    with open(str(legacy / 'config.json')) as f:
        config = json.load(f)
    assert config['epoch'] == 1  # the recipe: the old run's
    [entry] = config['resumed']
    assert entry['iteration'] == 10
    assert entry['snapshot'] == snapshot
    # the old config.json reads as today's options: only these differ
    assert entry['changed'] == {'epoch': [1, 2],
                                'out': ['/tmp/legacy_run', str(legacy)],
                                'resume': [None, snapshot]}


def test_the_old_snapshot_exports_as_before(legacy, tmp_path):
    output = str(tmp_path / 'new.bnn')
    assert export.main([str(legacy / SNAPSHOT), '-o', output]) == 0
    old = packed_format.load(os.path.join(LEGACY, 'network.bnn'))
    new = packed_format.load(output)
    # the new file's input says more (its shape and data set), and the
    # same about what the old one said
    assert {key: new.input[key] for key in old.input} == old.input
    assert [(layer.name, layer.kind, layer.n_in, layer.n_out, layer.output)
            for layer in new.layers] == [
        (layer.name, layer.kind, layer.n_in, layer.n_out, layer.output)
        for layer in old.layers]
    for new_layer, old_layer in zip(new.layers, old.layers):
        assert sorted(new_layer.arrays) == sorted(old_layer.arrays)
        for name, array in old_layer.arrays.items():
            assert new_layer.arrays[name].dtype == array.dtype
            numpy.testing.assert_array_equal(new_layer.arrays[name], array)
    # what the old file's source says, the new one says too
    assert new.source['snapshot'] == old.source['snapshot'] == SNAPSHOT
    for key, value in old.source['config'].items():
        assert new.source['config'][key] == value, key
    # the old file is of format version 1, the new one of today's
    with open(os.path.join(LEGACY, 'network.bnn'), 'rb') as f:
        assert f.read(12)[8:] == (1).to_bytes(4, 'little')
    with open(output, 'rb') as f:
        assert f.read(12)[8:] == packed_format.VERSION.to_bytes(4, 'little')
    images = mnist.load_raw()['test'][0]
    numpy.testing.assert_array_equal(
        packed_forward.forward(new, images, 'numba'),
        packed_forward.forward(old, images, 'numba'))


def test_the_old_packed_file_runs(legacy):
    network = str(legacy / 'network.bnn')
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'inference.py'), network],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r'accuracy: (\d\.\d{4}) \(10000 images, [\d.]+ s, '
                         r'\d+ images/s\)\n', result.stdout)
    assert match, result.stdout
    assert match.group(1) == OLD_ACCURACY
    # the old snapshot's Chainer model, run by today's code, agrees
    images, labels = mnist.load_raw()['test']
    expected = (chainer_predictions(str(legacy / SNAPSHOT), images) ==
                labels).mean()
    assert float(match.group(1)) == pytest.approx(expected, abs=5e-5)

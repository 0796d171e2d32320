"""bench/c_inference.py on a small trained network: its C model gives
numba's logits, and its report names every engine and target."""
import os
import re
import subprocess
import sys

import train_mnist
from helpers import ROOT


def test_report_of_a_trained_network(tmp_path):
    out = str(tmp_path / 'run')
    assert train_mnist.main([
        '--epoch', '1', '--unit', '16', '--train-subset', '500',
        '--test-subset', '100', '--batchsize', '50', '--noplot',
        '--out', out]) == 0
    snapshot = os.path.join(out, 'snapshot_iter_10')
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'bench', 'c_inference.py'),
         snapshot, '--rounds', '1', '--images', '40', '--batchsize', '20'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stderr
    row = re.search(r'^\| MLP 2x16 \| 40 \|(.*)\|$', result.stdout, re.M)
    assert row, result.stdout
    cells = [c.strip() for c in row.group(1).split('|')]
    # images/s of each engine, then the images whose C logits are
    # numba's, for each C build
    assert all(float(c) > 0 for c in cells[:-1]), cells
    assert cells[-1] == '40, 40'
    for target in ('x86-64', 'aarch64', 'cortex-m4', 'wasm32'):
        assert target in result.stdout

import subprocess
import sys

from qnn.utils import environment_check

from helpers import ROOT


def test_this_python_is_fine():
    assert environment_check.problem(('numpy', 'chainer')) is None


def test_other_python_versions_are_named():
    for version in ((3, 10), (3, 14), (2, 7)):
        found = environment_check.problem((), version)
        assert 'Python {}.{}'.format(*version) in found
        assert 'make' in found and '\n' not in found


def test_missing_package_is_named():
    found = environment_check.problem(('numpy', 'no_such_package_qnn'))
    assert found.startswith('no_such_package_qnn is not installed')
    assert sys.executable in found


def test_train_mnist_without_its_packages_is_one_line():
    # as when a Python without the set-up runs the script: -S leaves out
    # site-packages, where NumPy and Chainer are
    result = subprocess.run([sys.executable, '-S', 'train_mnist.py'],
                            cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith('train_mnist.py: error: numpy, chainer are '
                               'not installed')

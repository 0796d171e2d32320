"""A plain ``import chainer`` works in the project's environment.

``make setup`` installs ``qnn.pth`` (qnn/backends/chainer_import_hook.py);
these tests run the environment's Python outside the repository, with no
project module imported first, as a user's own script would.
"""
import os
import subprocess
import sys

import pytest

from qnn.backends import chainer_import_hook

from helpers import ROOT


def run_outside(tmp_path, code):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    return subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=env, timeout=300)


@pytest.fixture
def environment_hook(tmp_path):
    found = run_outside(tmp_path, 'import sys; print(any(type(f).__name__ '
                        '== "ChainerCompatFinder" for f in sys.meta_path))')
    if found.stdout.strip() != 'True':
        pytest.fail('{} has no qnn.pth: `make setup` installs it'.format(
            sys.executable), pytrace=False)


def test_import_chainer_alone_works(environment_hook, tmp_path):
    result = run_outside(tmp_path, 'import chainer, numpy; '
                         'import chainer.functions as F; '
                         'print(chainer.__version__, numpy.__version__)')
    assert result.returncode == 0, result.stderr
    import chainer
    import numpy
    assert result.stdout.split() == [chainer.__version__, numpy.__version__]


def test_the_project_imports_from_anywhere(environment_hook, tmp_path):
    result = run_outside(tmp_path, 'import net, qst; from qnn.packed import '
                         'forward; print(net.__file__)')
    assert result.returncode == 0, result.stderr
    assert os.path.dirname(result.stdout.strip()) == ROOT


def test_nothing_heavy_loads_at_start(environment_hook, tmp_path):
    # NumPy loads with Chainer, so environment_check still speaks first
    result = run_outside(tmp_path, 'import sys; print(sorted(m for m in '
                         '("numpy", "chainer") if m in sys.modules))')
    assert result.stdout.strip() == '[]', result.stderr


def test_the_finder_steps_aside_after_chainer(monkeypatch):
    finder = chainer_import_hook.ChainerCompatFinder()
    monkeypatch.setattr(sys, 'meta_path', [finder] + sys.meta_path)
    assert finder.find_spec('numpy') is None
    assert sys.meta_path[0] is finder
    assert finder.find_spec('chainer') is None  # the ordinary finders do it
    assert finder not in sys.meta_path
    assert 'qnn.backends.chainer_compat' in sys.modules

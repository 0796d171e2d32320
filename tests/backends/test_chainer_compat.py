import glob
import os
import subprocess
import sys
import textwrap

import numpy
import pytest

from qnn.backends import chainer_compat

from helpers import ROOT

# the root's modules and every module of the package, as dotted names
PROJECT_MODULES = sorted(
    os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.').replace(
        '.__init__', '')
    for path in glob.glob(os.path.join(ROOT, '*.py')) + glob.glob(
        os.path.join(ROOT, 'qnn', '**', '*.py'), recursive=True))


def run_python(code, env=None):
    return subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, env=env)


@pytest.mark.parametrize('module', PROJECT_MODULES)
def test_each_module_imports_in_a_fresh_interpreter(module):
    # Nothing imported before it: the module itself must bring the compat.
    result = run_python('import {}; import numpy; print(numpy.__version__)'
                        .format(module))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == numpy.__version__


def test_the_suite_runs_on_numpy_2():
    # The default set-up pins NumPy 2; this checks the pin took effect.
    assert int(numpy.__version__.split('.')[0]) >= 2


def test_chainer_imports_with_numpy_distutils_hidden():
    # As on Python 3.12+, where NumPy has no numpy.distutils.
    result = run_python('''
        import importlib.abc, sys

        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == 'numpy.distutils' or name.startswith(
                        'numpy.distutils.'):
                    raise ImportError('hidden: ' + name)

        sys.meta_path.insert(0, Hide())
        from qnn.backends import chainer_compat
        import chainer
        import chainer.functions as F
        import numpy
        assert numpy.distutils.system_info.get_info('blas_opt') == {}
        print(numpy.distutils.__doc__)
        ''')
    assert result.returncode == 0, result.stderr
    assert 'chainer_compat' in result.stdout


def test_sctypes_are_numpy_1s_table():
    assert numpy.sctypes['int'] == [
        numpy.int8, numpy.int16, numpy.int32, numpy.int64]
    assert numpy.sctypes['float'][:3] == [
        numpy.float16, numpy.float32, numpy.float64]


def test_an_existing_sctypes_is_left_alone(monkeypatch):
    sentinel = {'int': []}
    monkeypatch.setattr(numpy, 'sctypes', sentinel, raising=False)
    chainer_compat.install()
    assert numpy.sctypes is sentinel


def test_user_setting_of_version_warning_is_kept():
    env = dict(os.environ, CHAINER_WARN_VERSION_MISMATCH='1')
    result = run_python('''
        import os
        from qnn.backends import chainer_compat
        print(os.environ['CHAINER_WARN_VERSION_MISMATCH'])''', env=env)
    assert result.stdout.strip() == '1', result.stderr


def test_as_strided_works_through_the_compat():
    # chainer.functions.as_strided reads numpy.sctypes at import and in
    # its backward.
    import chainer
    import chainer.functions as F
    x = chainer.Variable(numpy.arange(6, dtype=numpy.float32))
    y = F.as_strided(x, (3,), (2,))  # strides in elements
    numpy.testing.assert_array_equal(y.array, [0, 2, 4])
    y.grad = numpy.ones(3, dtype=numpy.float32)
    y.backward()
    numpy.testing.assert_array_equal(x.grad, [1, 0, 1, 0, 1, 0])

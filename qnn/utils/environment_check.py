"""Before anything else: is this a Python the project's set-up serves?

An entry point calls :func:`require` before it imports NumPy or Chainer, so
that a wrong interpreter (another Python version, or one without the
project's packages, e.g. the system ``python3`` instead of
``.venv/bin/python``) ends with one line saying what to run, not with an
``ImportError`` traceback. Uses the standard library only.
"""
import importlib.util
import sys

SUPPORTED = ((3, 11), (3, 13))  # the pinned wheels exist for these


def problem(modules, version=None):
    """What is wrong with this interpreter, or ``None``."""
    version = tuple((version or sys.version_info)[:2])
    if not SUPPORTED[0] <= version <= SUPPORTED[1]:
        return ('this is Python {}.{} ({}); the project needs Python 3.11, '
                '3.12 or 3.13: run make setup with one of them (make '
                'PYTHON=python3.12 setup), then .venv/bin/python'.format(
                    version[0], version[1], sys.executable))
    missing = [name for name in modules
               if importlib.util.find_spec(name) is None]
    if missing:
        return ('{} not installed in this Python ({}): run make setup, '
                'then use .venv/bin/python'.format(
                    ', '.join(missing) + (' is' if len(missing) == 1
                                          else ' are'), sys.executable))
    if 'chainer' in modules and importlib.util.find_spec(
            'pkg_resources') is None:
        return ('pkg_resources is missing (Chainer 7.8.1 imports it): pip '
                "install 'setuptools<81' into this Python, or run make setup")
    return None


def require(program, modules=('numpy', 'chainer')):
    """Exits with one line (status 1) unless this Python can run
    ``program``."""
    found = problem(modules)
    if found is not None:
        sys.stderr.write('{}: error: {}\n'.format(program, found))
        raise SystemExit(1)

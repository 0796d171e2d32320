"""A plain ``import chainer`` that works in the project's environment.

Chainer 7.8.1 fails at ``import chainer`` on NumPy 2 unless
:mod:`qnn.backends.chainer_compat` ran first, which every module of the
project sees to. A user's own script or notebook does not; so ``make
setup`` puts ``qnn.pth`` into the environment's ``site-packages``: it adds
the repository to ``sys.path`` (as an editable install would) and imports
this module at interpreter start. :func:`install` then puts
:class:`ChainerCompatFinder` first on ``sys.meta_path``, which runs
:mod:`qnn.backends.chainer_compat` just before Chainer is first imported.
Nothing else is imported at start: NumPy loads with Chainer, not before,
so :mod:`qnn.utils.environment_check` still speaks first.
"""
import sys


class ChainerCompatFinder(object):
    """An import finder that finds nothing: at the first import of
    ``chainer`` (or a module of it) it removes itself from
    ``sys.meta_path``, imports :mod:`qnn.backends.chainer_compat`, and lets
    the ordinary finders import Chainer."""

    def find_spec(self, name, path=None, target=None):
        if name == 'chainer' or name.startswith('chainer.'):
            sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
            __import__('qnn.backends.chainer_compat')
        return None


def install():
    """Puts a :class:`ChainerCompatFinder` first on ``sys.meta_path``,
    unless Chainer is imported already or one is there."""
    if 'chainer' in sys.modules or any(
            isinstance(f, ChainerCompatFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, ChainerCompatFinder())


install()

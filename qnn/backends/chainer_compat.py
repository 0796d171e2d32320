"""Lets the released Chainer 7.8.1 import and run on today's stack.

Chainer 7.8.1 (the last release) was written for NumPy 1 and Python <= 3.11.
On NumPy 2, Python 3.12/3.13 and CuPy 14 it fails at ``import chainer`` for
want of a few names. This module supplies exactly those, only when they are
missing, without copying Chainer's code or editing its installed files.
Import it before ``chainer``: every module of this project does, so that
``import qst`` in a user's own script works on NumPy 2 as well.

What it does, each for one line of Chainer's:

* ``numpy.sctypes`` (removed in NumPy 2.0): the NumPy 1.26 table.
* ``numpy.distutils.system_info`` (gone on Python 3.12+, and unimportable
  beside setuptools >= 74): a stand-in whose ``get_info`` finds nothing.
  Chainer reads it only on macOS, to warn about Accelerate.
* ``CHAINER_WARN_VERSION_MISMATCH=0`` unless the user set it: Chainer
  declares ``cupy<8``; with CuPy 14 it would print a page of warning at
  every import although the CuPy API it calls is still there.

``pkg_resources`` cannot be supplied this way (Chainer calls its
``require``/``WorkingSet``); it comes with setuptools < 81, which the
Makefile installs; :mod:`qnn.utils.environment_check` names the fix when it is
missing.
"""
import importlib
import os
import sys
import types

import numpy

# Names NumPy 2 removed that Chainer reads, and where it reads them.
_NUMPY_1_SCTYPES = {
    'int': [numpy.int8, numpy.int16, numpy.int32, numpy.int64],
    'uint': [numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64],
    'float': [numpy.float16, numpy.float32, numpy.float64, numpy.longdouble],
    'complex': [numpy.complex64, numpy.complex128, numpy.clongdouble],
    'others': [bool, object, bytes, str, numpy.void],
}


def _supply_sctypes():
    # chainer/functions/array/as_strided.py:10 (np.sctypes['int']) and :252
    # (np.sctypes['float']).
    if not hasattr(numpy, 'sctypes'):
        numpy.sctypes = _NUMPY_1_SCTYPES


def _supply_distutils_system_info():
    # chainer/_environment_check.py:6 imports numpy.distutils.system_info;
    # :29 calls its get_info('blas_opt'), on macOS only.
    try:
        importlib.import_module('numpy.distutils.system_info')
        return
    except ImportError:
        pass
    for name in ('numpy.distutils.system_info', 'numpy.distutils'):
        sys.modules.pop(name, None)
    distutils = types.ModuleType('numpy.distutils')
    distutils.__doc__ = 'Stand-in supplied by chainer_compat.'
    system_info = types.ModuleType('numpy.distutils.system_info')
    system_info.get_info = lambda name, notfound_action=0: {}
    distutils.system_info = system_info
    sys.modules['numpy.distutils'] = distutils
    sys.modules['numpy.distutils.system_info'] = system_info
    numpy.distutils = distutils


def _quiet_cupy_version_warning():
    # chainer/_environment_check.py:53 checks cupy against 'cupy>=7.7.0,<8'
    # unless CHAINER_WARN_VERSION_MISMATCH is '0'.
    os.environ.setdefault('CHAINER_WARN_VERSION_MISMATCH', '0')


def install():
    """Supplies what is missing. Idempotent; run at import of this module."""
    _supply_sctypes()
    _supply_distutils_system_info()
    _quiet_cupy_version_warning()


install()

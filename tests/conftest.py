import os
import shutil
import subprocess
import sys

import pytest

# The project's root modules (like chainer's examples/mnist) and the tests'
# shared helpers (tests/helpers.py)
TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
for path in (ROOT, TESTS):
    if path not in sys.path:
        sys.path.insert(0, path)

from qnn.backends import chainer_compat  # NOQA: E402,F401  (before chainer)


# make gpu-check: a GPU test that cannot run fails instead of skipping
REQUIRE_GPU = os.environ.get('QNN_REQUIRE_GPU') == '1'


@pytest.fixture
def fail_without_gpu(request):
    pytest.fail('QNN_REQUIRE_GPU=1: ' + request.node.missing_gpu)


def _cuda_reason():
    from chainer.backends import cuda
    if not cuda.available:
        return 'CUDA through CuPy is not available'
    try:
        if cuda.cupy.cuda.runtime.getDeviceCount() < 1:
            return 'no CUDA device'
    except Exception as e:
        return 'no usable CUDA device ({})'.format(e)
    return None


def _chainerx_reason():
    import chainerx
    if not chainerx.is_available():
        return 'Chainer is built without ChainerX'
    return None


def pytest_collection_modifyitems(config, items):
    # chainer.testing marks backend-injected tests with `gpu`, `cudnn` and
    # `chainerx`; skip those the machine cannot run instead of failing them.
    reasons = {}
    for item in items:
        for mark, probe in (('gpu', _cuda_reason), ('cudnn', _cuda_reason),
                            ('chainerx', _chainerx_reason)):
            if item.get_closest_marker(mark) is None:
                continue
            if mark not in reasons:
                reasons[mark] = probe()
            if reasons[mark]:
                if mark != 'chainerx' and REQUIRE_GPU:
                    item.missing_gpu = reasons[mark]
                    item.fixturenames.insert(0, 'fail_without_gpu')
                else:
                    item.add_marker(pytest.mark.skip(reason=reasons[mark]))
                break


def _find_mpi():
    """Returns (mpiexec, None), or (None, what is missing)."""
    mpiexec = os.path.join(os.path.dirname(sys.executable), 'mpiexec')
    if not os.access(mpiexec, os.X_OK):
        mpiexec = shutil.which('mpiexec')
    if mpiexec is None:
        return None, 'no mpiexec beside {} or on PATH'.format(sys.executable)
    probe = subprocess.run([sys.executable, '-c', 'from mpi4py import MPI'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, timeout=60)
    if probe.returncode != 0:
        lines = probe.stdout.strip().splitlines() or ['exit status {}'.format(
            probe.returncode)]
        return None, 'mpi4py cannot load MPI ({})'.format(lines[-1])
    return mpiexec, None


@pytest.fixture(scope='module')
def packed_file(tmp_path_factory):
    """A packed file of a random 784-33-10 network
    (:func:`helpers.random_network`, seed 5)."""
    import numpy
    from qnn.packed import format as packed_format
    from helpers import random_network
    path = str(tmp_path_factory.mktemp('packed') / 'net.bnn')
    packed_format.save(path, random_network(numpy.random.default_rng(5),
                                            (784, 33, 10)))
    return path


@pytest.fixture(scope='module')
def mpiexec():
    """The mpiexec of MPICH beside Python (``make mpi``); skips without
    it, fails on CI."""
    path, problem = _find_mpi()
    if problem is not None:
        if os.environ.get('CI', '').lower() == 'true':
            pytest.fail('CI must run the MPI tests, but {}; `make test` '
                        'installs requirements-mpi.txt'.format(problem),
                        pytrace=False)
        pytest.skip('{}: run `make mpi`'.format(problem))
    return path


@pytest.fixture(scope='module')
def good_snapshot(tmp_path_factory):
    """The snapshot of a run of train_mnist.py on ``helpers.SMALL``, one
    epoch."""
    import train_mnist
    from helpers import SMALL
    out = tmp_path_factory.mktemp('good')
    assert train_mnist.main(['--epoch', '1', '--out', str(out), '--noplot']
                            + SMALL) == 0
    return out / 'snapshot_iter_10'

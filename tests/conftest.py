import os
import sys

import pytest

# The project is a flat set of modules (like chainer's examples/mnist).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import chainer_compat  # NOQA: E402,F401  (before chainer: NumPy 2)


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

"""Devices from --device specifiers (qnn.backends.devices): one line for what
is missing."""
import pytest

import train_mnist

from helpers import run_script


def test_gpu_without_cuda_is_one_line():
    from chainer.backends import cuda
    if cuda.available:
        pytest.skip('CuPy is installed here')
    proc = run_script('--gpu=0', '--epoch', '1')
    assert proc.returncode == 1
    assert proc.stdout == ''
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert 'CUDA through CuPy' in lines[0]
    try:
        import cupy  # NOQA
    except ImportError:
        assert 'cupy is not installed: run `make gpu`' in lines[0]
    else:  # installed, but the CUDA libraries are missing
        assert 'CuPy is installed but cannot load CUDA' in lines[0]


def test_bad_device_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        train_mnist.main(['--device', 'tpu:7'])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid device specifier 'tpu:7'" in err[0]

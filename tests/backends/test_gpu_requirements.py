"""The CuPy requirement of the driver's CUDA (qnn.backends.gpu_requirements),
run as ``make gpu`` runs it."""
import os
import subprocess
import sys

from qnn.backends import gpu_requirements

from helpers import ROOT

PINS = gpu_requirements.read_pins()


def test_pins_hold_one_cupy_wheel_per_supported_cuda():
    for cuda in gpu_requirements.SUPPORTED:
        assert ['cupy-cuda{}x'.format(cuda)] == [
            line.split('==')[0] for line in PINS
            if line.startswith('cupy-cuda{}x'.format(cuda))]


def test_the_wheel_of_the_driver_and_the_shared_pins():
    for cuda, other in (('12', '13'), ('13', '12')):
        chosen = gpu_requirements.requirements(cuda, True, PINS)
        assert any(line.startswith('cupy-cuda{}x=='.format(cuda))
                   for line in chosen)
        assert not any('cupy-cuda{}x'.format(other) in line
                       for line in chosen)
        assert [line for line in PINS if not line.startswith('cupy-cuda')] \
            == [line for line in chosen if not line.startswith('cupy')]


def test_without_a_toolkit_the_runtime_wheels_come_too():
    chosen = gpu_requirements.requirements('13', False, PINS)
    assert [line for line in chosen if line.startswith('cupy')] == [
        line.replace('cupy-cuda13x', 'cupy-cuda13x[ctk]')
        for line in PINS if line.startswith('cupy-cuda13x')]


def run(cuda):
    env = dict(os.environ, CUDA=cuda)
    return subprocess.run(
        [sys.executable, '-m', 'qnn.backends.gpu_requirements'], cwd=ROOT,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=60)


def test_command_line():
    result = run('12')
    assert result.returncode == 0, result.stderr
    assert 'cupy-cuda12x' in result.stdout.split()[0]
    result = run('11')
    assert result.returncode == 1 and result.stdout == ''
    assert result.stderr.count('\n') == 1
    assert 'CUDA 11 is not supported' in result.stderr

#!/usr/bin/env python
"""Prints the pip requirements of CUDA through CuPy for this machine.

``make gpu`` installs what this prints. The CuPy wheel must match the CUDA
major version of the NVIDIA driver (``cupy-cuda12x`` or ``cupy-cuda13x``):
taken from ``CUDA=12|13`` if set, else from what ``nvidia-smi`` reports.
Where no CUDA toolkit is found (``nvcc``, ``$CUDA_PATH``, ``/usr/local/cuda``)
the ``[ctk]`` extra brings NVIDIA's CUDA runtime wheels (CuPy 14's documented
way to run without a toolkit). The pins are in requirements-gpu.txt.
Problems: one line on stderr, exit 1.
"""
import os
import re
import shutil
import subprocess
import sys

# the repository root (this file is qnn/backends/gpu_requirements.py)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SUPPORTED = ('12', '13')


def driver_cuda_major():
    """The CUDA major version the driver supports, or None."""
    try:
        text = subprocess.run(['nvidia-smi'], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL,
                              universal_newlines=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'CUDA Version:\s*(\d+)\.', text)
    return match.group(1) if match else None


def has_toolkit():
    home = os.environ.get('CUDA_PATH') or '/usr/local/cuda'
    return shutil.which('nvcc') is not None or os.path.isdir(
        os.path.join(home, 'lib64'))


def requirements(cuda, toolkit, pins):
    """The requirement lines for CUDA major ``cuda``."""
    package = 'cupy-cuda{}x'.format(cuda)
    chosen = []
    for line in pins:
        name = re.split(r'[=<>\[ ]', line, 1)[0]
        if name == package:
            chosen.append(line if toolkit else line.replace(
                package, package + '[ctk]', 1))
        elif not name.startswith('cupy-cuda'):
            chosen.append(line)
    return chosen


def read_pins(path=os.path.join(ROOT, 'requirements-gpu.txt')):
    with open(path) as f:
        return [line.strip() for line in f
                if line.strip() and not line.startswith('#')]


def main():
    cuda = os.environ.get('CUDA') or driver_cuda_major()
    if cuda is None:
        sys.stderr.write(
            'gpu_requirements.py: error: no NVIDIA driver found (nvidia-smi '
            'is missing or lists no CUDA version); install the driver, or '
            'set CUDA=12 or CUDA=13 to choose the CuPy wheel yourself\n')
        return 1
    if cuda not in SUPPORTED:
        sys.stderr.write(
            'gpu_requirements.py: error: CUDA {} is not supported by the '
            'pinned CuPy 14 wheels (CUDA 12 or 13); set CUDA=12 or CUDA=13 '
            'if the driver runs those\n'.format(cuda))
        return 1
    print(' '.join(requirements(cuda, has_toolkit(), read_pins())))
    return 0


if __name__ == '__main__':
    sys.exit(main())

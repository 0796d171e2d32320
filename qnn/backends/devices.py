"""The device a command runs on, or one line saying what is missing.

``--device`` takes Chainer's device specifiers (``-1``/``@numpy``, ``0``/
``@cupy:0``, ``native:0`` for ChainerX). When the device cannot be had, the
message says which piece is missing (CuPy, the CUDA libraries, a GPU,
ChainerX) and how to get it.
"""
from qnn.utils.errors import fail

CPU_SPECS = ('-1', '@numpy', 'cpu')


def cuda_device_of(spec):
    """The GPU number a ``--device`` specifier names (``N``, ``@cupy:N``),
    ``None`` for the CPU (``-1``, ``@numpy``); raises ``ValueError`` for
    anything else (ChainerX's ``native:0``, ``cuda:0`` included). Needs
    no Chainer: inference.py runs without it."""
    spec = spec.strip()
    if spec in CPU_SPECS:
        return None
    text = spec[len('@cupy:'):] if spec.startswith('@cupy:') else spec
    if not text.isdigit():
        raise ValueError('--device {!r}: use -1 (CPU) or a GPU number'.format(
            spec))
    return int(text)


def wants_cuda(spec):
    try:
        return cuda_device_of(spec) is not None
    except ValueError:
        return spec.startswith(('@cupy', 'cuda'))


def get_device(spec):
    """Returns the Chainer device for ``spec``, or fails with one line
    saying what is missing."""
    from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
    import chainer
    try:
        device = chainer.get_device(
            int(spec) if spec.lstrip('-').isdigit() else spec)
    except Exception as e:  # Chainer raises several types here
        if wants_cuda(spec) and not chainer.backends.cuda.available:
            fail('device {} needs CUDA through CuPy, which is not available '
                 '({})'.format(spec, cuda_problem()))
        if spec.startswith(('native', 'cuda')) and \
                not chainer.backend.chainerx.is_available():
            fail('device {} needs ChainerX, which this Chainer was built '
                 'without (set CHAINER_BUILD_CHAINERX=1 when installing '
                 'chainer)'.format(spec))
        fail('invalid device specifier {!r} ({}); use -1 or @numpy, 0 or '
             '@cupy:0, native:0'.format(spec, e))
    try:
        device.use()
        if device.xp is chainer.backends.cuda.cupy:
            chainer.backends.cuda.cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        fail('device {} cannot be used: {}: {} (is an NVIDIA driver loaded? '
             'nvidia-smi should list the GPU)'.format(
                 spec, type(e).__name__, e))
    return device


def cuda_problem():
    """Says why Chainer could not load CuPy and what to install."""
    import chainer
    error = getattr(chainer.backends.cuda, '_resolution_error', None)
    if error is None or isinstance(error, ImportError) and \
            getattr(error, 'name', None) == 'cupy':
        return ('cupy is not installed: run `make gpu` on a machine with an '
                'NVIDIA driver (it installs the CuPy 14 wheel for the '
                "driver's CUDA 12 or 13)")
    return ('CuPy is installed but Chainer cannot use it: {}: {}; run `make '
            'gpu` (CuPy 14 for the CUDA version of the driver, with NVIDIA\'s '
            'CUDA runtime wheels when no CUDA toolkit is found)'.format(
                type(error).__name__, error))

"""The numba kernels of cpu_kernels against their NumPy references, bit for
bit, and their use by InplaceAdam + WeightClip and qst."""
import numpy
import pytest

from qnn.backends import chainer_compat  # NOQA: F401  (before chainer)
import chainer

from link_quantized_linear import QuantizedLinear
from qnn.backends import cpu_kernels
from qnn.functions import batch_normalization_sign
from qnn.optimizers import inplace_adam
from qnn.optimizers import shift_adamax
from qnn.optimizers.inplace_adam import InplaceAdam
from qnn.optimizers.inplace_adam import InplaceAdamRule
from qnn.optimizers.shift_adamax import ShiftAdaMax
import qst
from weight_clip import WeightClip

pytestmark = pytest.mark.skipif(
    not cpu_kernels.available(), reason='numba kernels not available')

# a small and a large size, not round numbers
SIZES = [1000, 3 * (1 << 15) + 5]


def reference_adam(param, grad, m, v, c1, c2, alpha_t, eps, eta, wd, clip):
    # inplace_adam's NumPy passes, then the clip
    t = numpy.empty_like(param)
    numpy.subtract(grad, m, out=t)
    t *= c1
    m += t
    numpy.multiply(grad, grad, out=t)
    t -= v
    t *= c2
    v += t
    numpy.sqrt(v, out=t)
    t += eps
    numpy.divide(alpha_t, t, out=t)
    t *= m
    decay = 1.0 - eta * wd
    if decay != 1:
        param *= decay
    t *= -eta
    param += t
    if clip is not None:
        numpy.clip(param, clip[0], clip[1], out=param)


def adam_arrays(n, dtype, seed=0):
    rng = numpy.random.default_rng(seed)
    param = rng.uniform(-1.3, 1.3, n).astype(dtype)
    param[n // 2] = numpy.nan  # kept by the clip
    param[n // 3] = -0.0
    grad = rng.normal(0, 1e-2, n).astype(dtype)
    m = rng.normal(0, 1e-3, n).astype(dtype)
    v = rng.uniform(0, 1e-4, n).astype(dtype)
    return [param, grad, m, v]


@pytest.mark.parametrize('n', SIZES)
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
@pytest.mark.parametrize('hyper', [
    (0.1, 0.001, 1e-3, 1e-8, 1.0, 0.0),
    (0.2, 0.01, 0.0371, 1e-6, 0.037, 0.1),  # Glorot eta, weight decay
])
@pytest.mark.parametrize('clip', [None, (-1.0, 1.0), (-0.5, 0.25)])
def test_adam_equals_reference(n, dtype, hyper, clip):
    expected = adam_arrays(n, dtype)
    got = [a.copy() for a in expected]
    reference_adam(*expected, *hyper, clip)
    c1, c2, alpha_t, eps, eta, wd = hyper
    inplace_adam.numba_adam(*got, c1=c1, c2=c2, alpha_t=alpha_t, eps=eps, eta=eta,
                     weight_decay_rate=wd, clip=clip)
    for name, a, b in zip(('param', 'grad', 'm', 'v'), got, expected):
        numpy.testing.assert_array_equal(a, b, name)
    if clip is not None:
        inside = ~numpy.isnan(got[0])
        assert (got[0][inside] >= clip[0]).all()
        assert (got[0][inside] <= clip[1]).all()
        assert numpy.isnan(got[0][n // 2])


@pytest.mark.parametrize('n', SIZES)
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
def test_sign_equals_reference(n, dtype):
    x = numpy.random.default_rng(1).normal(0, 1, n).astype(dtype)
    x[:4] = [0.0, -0.0, numpy.nan, numpy.inf]
    y = numpy.full_like(x, 7)
    qst.numba_sign(x, y)
    expected = numpy.sign(x)
    expected += expected == 0
    numpy.testing.assert_array_equal(y, expected)
    assert y[0] == 1 and y[1] == 1 and numpy.isnan(y[2])


@pytest.mark.parametrize('shape', [(1, 5), (7, 3), (100, 1000)])
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
def test_bn_statistics_equal_numpy(shape, dtype):
    rng = numpy.random.default_rng(3)
    # an offset and a spread that make rounding matter
    x = (rng.normal(0, 1, shape) * 1e3 + 7e3).astype(dtype)
    x[:, 0] = -0.0
    if shape[1] > 2:
        x[-1, 1] = numpy.nan
        x[0, 2] = numpy.inf
    mean, var = batch_normalization_sign.numba_bn_statistics(x)
    with numpy.errstate(invalid='ignore'):  # inf - inf
        expected = (x.mean(axis=(0,), dtype=dtype),
                    x.var(axis=(0,), dtype=dtype))
    # bit for bit, -0.0 and NaN included
    bits = 'u{}'.format(x.itemsize)
    for got, want in zip((mean, var), expected):
        numpy.testing.assert_array_equal(got.view(bits), want.view(bits))


def test_qst_sign_uses_kernel_and_matches_numpy_path(monkeypatch):
    x = numpy.random.default_rng(2).normal(0, 1, (300, 200)).astype('f')
    x[0, :2] = [0.0, numpy.nan]
    calls = []
    kernel = qst.numba_sign
    monkeypatch.setattr(qst, 'numba_sign',
                        lambda x, y: calls.append(1) or kernel(x, y))
    got = qst.quantize(x, 1)
    assert calls == [1]
    monkeypatch.setenv('QNN_CPU_KERNELS', 'numpy')
    expected = qst.quantize(x, 1)
    assert calls == [1]  # the NumPy path this time
    numpy.testing.assert_array_equal(got, expected)


class Model(chainer.Chain):

    def __init__(self):
        super(Model, self).__init__()
        with self.init_scope():
            # the first large enough for the parallel kernel
            self.l1 = QuantizedLinear(300, 400)
            self.l2 = QuantizedLinear(400, 10)
            self.b = chainer.links.Bias(shape=(10,))  # not clipped

    def forward(self, x):
        return self.b(self.l2(self.l1(x)))


def train(optimizer, steps=4, clip=True):
    numpy.random.seed(3)
    model = Model()
    optimizer.setup(model)
    if clip:
        optimizer.add_hook(WeightClip(-1.0, 1.0))
    x = numpy.random.uniform(-1, 1, (20, 300)).astype('f')
    for _ in range(steps):
        optimizer.update(lambda: chainer.functions.sum(model(x) ** 2))
    return model


def params(model):
    return {name: p.array.copy() for name, p in model.namedparams()}


@pytest.mark.parametrize('kernels', ['numba', 'numpy'])
def test_fused_clip_bit_for_bit_chainer_adam_and_hook(kernels, monkeypatch):
    # a large step pushes weights past the bounds: the clip must act
    expected = params(train(chainer.optimizers.Adam(alpha=0.3)))
    monkeypatch.setenv('QNN_CPU_KERNELS', kernels)
    got = train(InplaceAdam(alpha=0.3))
    for name, array in params(got).items():
        numpy.testing.assert_array_equal(array, expected[name], name)
    W = got.l1.W.array
    assert W.max() == 1 and W.min() == -1
    assert abs(got.b.b.array).max() > 1  # the bias is not clipped
    # the rules clipped, so the hook skipped those weights
    for link in (got.l1, got.l2):
        assert link.W.update_rule.clipped[2] == 4
    assert got.b.b.update_rule.clipped is None


def test_hook_clips_when_rule_did_not(monkeypatch):
    clipped_by_hook = []
    clip = WeightClip._clip
    monkeypatch.setattr(WeightClip, '_clip',
                        lambda self, a: clipped_by_hook.append(a.shape) or
                        clip(self, a))
    train(InplaceAdam(alpha=0.3), steps=2)
    assert clipped_by_hook == []  # fused every time
    # another post-update hook first: the hook clips, nothing is fused
    optimizer = InplaceAdam(alpha=0.3)
    numpy.random.seed(3)
    model = Model()
    optimizer.setup(model)
    seen = []
    optimizer.add_hook(lambda opt: seen.append(opt.target.l1.W.array.max()),
                       name='probe', timing='post')
    optimizer.add_hook(WeightClip(-1.0, 1.0))
    x = numpy.random.uniform(-1, 1, (20, 300)).astype('f')
    for _ in range(4):
        optimizer.update(lambda: chainer.functions.sum(model(x) ** 2))
    assert max(seen) > 1  # the probe saw the unclipped updates
    assert sorted(clipped_by_hook) == [(10, 400)] * 4 + [(400, 300)] * 4
    assert model.l1.W.array.max() <= 1


def test_no_hook_no_clip():
    model = train(InplaceAdam(alpha=0.3), clip=False)
    assert abs(model.l1.W.array).max() > 1
    assert model.l1.W.update_rule.clipped is None


def test_fused_clip_lasts_one_update():
    optimizer = InplaceAdam(alpha=0.3)
    model = train(optimizer, steps=1)
    optimizer.remove_hook('WeightClip')
    x = numpy.random.uniform(-1, 1, (20, 300)).astype('f')
    for _ in range(3):
        optimizer.update(lambda: chainer.functions.sum(model(x) ** 2))
    assert abs(model.l1.W.array).max() > 1
    assert isinstance(model.l1.W.update_rule, InplaceAdamRule)


@pytest.mark.parametrize('n', SIZES)
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
def test_ste_equals_reference(n, dtype):
    rng = numpy.random.default_rng(4)
    x = rng.uniform(-2, 2, n).astype(dtype)
    gy = rng.normal(0, 1, n).astype(dtype)
    x[:6] = [1.0, -1.0, numpy.nan, 0.0, 3.0, -3.0]
    gy[4:8] = [numpy.nan, -0.5, numpy.inf, -0.0]
    got = qst.numba_ste(x, gy)
    with numpy.errstate(invalid='ignore'):  # inf * 0 is NaN, on purpose
        expected = gy * qst.ste_mask(x)
    assert got.dtype == dtype
    numpy.testing.assert_array_equal(got, expected)
    # the sign of the zeros too (0 * -0.5 is -0.0)
    numpy.testing.assert_array_equal(numpy.signbit(got),
                                     numpy.signbit(expected))


def shift_adamax_model(n, dtype):
    model = chainer.Link()
    with model.init_scope():
        model.w = chainer.Parameter(
            numpy.random.default_rng(5).uniform(-1, 1, n).astype(dtype))
    return model


@pytest.mark.parametrize('n', SIZES)
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
@pytest.mark.parametrize('kwargs', [
    {}, {'alpha': 0.01, 'eta': 3.0},
    {'eps': 0.0},  # AP2 of 0 and of subnormals (frexp's way)
    {'round_norm': True}, {'round_norm': True, 'eps': 0.0}])
def test_shift_adamax_kernel_equals_numpy_path(n, dtype, kwargs,
                                               monkeypatch):
    # four steps of ShiftAdaMax with and without the kernel, gradients of
    # magnitudes 1e-40 to 1e2 (AP2 of subnormals and of many exponents),
    # zeros, NaN and inf: the same parameters and states, bit for bit
    rng = numpy.random.default_rng(6)
    grads = []
    for t in range(4):
        g = rng.normal(0, 1, n) * 10.0 ** rng.integers(-40, 3, n)
        g = g.astype(dtype)
        g[t:t + 3] = [0.0, -0.0, numpy.nan] if t == 2 else [0.0, -0.0, 1.0]
        if t == 3:
            g[7] = numpy.inf
        grads.append(g)
    results = []
    for kernels in ('numba', 'numpy'):
        monkeypatch.setenv('QNN_CPU_KERNELS', kernels)
        model = shift_adamax_model(n, dtype)
        optimizer = ShiftAdaMax(**kwargs)
        optimizer.setup(model)
        for g in grads:
            model.w.grad = g.copy()
            with numpy.errstate(divide='ignore', invalid='ignore'):
                optimizer.update()  # 0 / 0 where eps = 0: NaN, on purpose
        state = model.w.update_rule.state
        results.append([model.w.array, state['m'], state['u']])
    for name, got, expected in zip(('param', 'm', 'u'), *results):
        assert got.dtype == dtype
        numpy.testing.assert_array_equal(got, expected, name)
        numpy.testing.assert_array_equal(numpy.signbit(got),
                                         numpy.signbit(expected), name)
    assert numpy.isnan(results[0][0]).any()  # the NaN went through


def test_shift_adamax_uses_kernel(monkeypatch):
    calls = []
    kernel = shift_adamax.numba_shift_adamax
    monkeypatch.setattr(shift_adamax, 'numba_shift_adamax',
                        lambda *a: calls.append(1) or kernel(*a))
    model = shift_adamax_model(100, numpy.float32)
    optimizer = ShiftAdaMax()
    optimizer.setup(model)
    model.w.grad = numpy.ones(100, numpy.float32)
    optimizer.update()
    assert calls == [1]


def test_usable():
    a = numpy.zeros(10, numpy.float32)
    assert cpu_kernels.usable(a, a)
    assert not cpu_kernels.usable(a, a.astype(numpy.float64))
    assert not cpu_kernels.usable(a.astype(numpy.float16))
    assert not cpu_kernels.usable(numpy.zeros((4, 4), numpy.float32).T[:2])


# (x shape, kh, kw, stride, pad, dilate, cover_all) of the patch kernels
PATCHES = [
    ((3, 16, 14, 14), 3, 3, (1, 1), (1, 1), (1, 1), False),
    ((2, 1, 28, 28), 3, 3, (1, 1), (1, 1), (1, 1), False),
    ((2, 3, 7, 6), 3, 2, (2, 1), (1, 0), (1, 1), False),
    ((2, 3, 7, 7), 2, 3, (1, 2), (2, 0), (2, 1), False),
    ((2, 3, 7, 7), 3, 3, (2, 2), (1, 1), (1, 1), True),
]


def patches(monkeypatch, kernels, function, *args):
    if not kernels:
        monkeypatch.setenv('QNN_CPU_KERNELS', 'numpy')
    try:
        return function(*args)
    finally:
        monkeypatch.delenv('QNN_CPU_KERNELS', raising=False)


@pytest.mark.parametrize('case', PATCHES)
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
@pytest.mark.parametrize('channels_last', [False, True])
def test_im2col_and_col2im_equal_references(case, dtype, channels_last,
                                             monkeypatch):
    from chainer.utils import conv
    from qnn.functions.quantized_convolution_2d import col2im
    from qnn.functions.quantized_convolution_2d import im2col
    shape, kh, kw, (sy, sx), (ph, pw), (dy, dx), cover_all = case
    rng = numpy.random.default_rng(3)
    x = rng.normal(0, 1, shape).astype(dtype)
    if channels_last:  # a strided input, as a convolution's output is
        x = numpy.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(
            0, 3, 1, 2)
    args = (x, kh, kw, sy, sx, ph, pw, dy, dx, cover_all)
    (col, out), (expected, out_expected) = [
        patches(monkeypatch, k, im2col, *args) for k in (True, False)]
    assert out == out_expected and col.flags.c_contiguous
    numpy.testing.assert_array_equal(col, expected)
    # the columns are Chainer's im2col_cpu, (c, ky, kx) made (ky, kx, c)
    chainer_col = conv.im2col_cpu(x, kh, kw, sy, sx, ph, pw,
                                  cover_all=cover_all, dy=dy, dx=dx)
    numpy.testing.assert_array_equal(
        col, chainer_col.transpose(0, 4, 5, 2, 3, 1).reshape(col.shape))
    g = rng.normal(0, 1, col.shape).astype(dtype)
    gx, gx_expected = [
        patches(monkeypatch, k, col2im, g, shape, kh, kw, sy, sx, ph, pw, dy,
                dx, out) for k in (True, False)]
    assert gx.flags.c_contiguous
    numpy.testing.assert_array_equal(gx, gx_expected)
    # the same sums, in the same order, as Chainer's col2im_cpu
    g6 = g.reshape(shape[0], out[0], out[1], kh, kw, shape[1])
    numpy.testing.assert_array_equal(gx, conv.col2im_cpu(
        g6.transpose(0, 5, 3, 4, 1, 2), sy, sx, ph, pw, shape[2], shape[3],
        dy, dx))


@pytest.mark.parametrize('shape', [(3, 16, 14, 14), (2, 5, 7, 7),
                                   (2, 3, 5, 4), (1, 2, 1, 1)])
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
@pytest.mark.parametrize('channels_last', [False, True])
def test_max_pool_2x2_equals_reference(shape, dtype, channels_last,
                                       monkeypatch):
    from qnn.functions.max_pooling_2x2 import MaxPooling2x2
    from qnn.functions.max_pooling_2x2 import MaxPooling2x2Grad
    rng = numpy.random.default_rng(4)
    # small integers: most windows hold equal maxima; and a NaN
    x = rng.integers(-2, 3, shape).astype(dtype)
    x.reshape(-1)[1] = numpy.nan
    if channels_last:
        x = numpy.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(
            0, 3, 1, 2)
    results = []
    for kernels in (True, False):
        pooling = MaxPooling2x2()
        y, = patches(monkeypatch, kernels, pooling.forward, (x,))
        gy = rng.normal(0, 1, y.shape).astype(dtype) if kernels else gy
        gx, = patches(monkeypatch, kernels,
                      MaxPooling2x2Grad(pooling).forward, (gy,))
        results.append((y, pooling.index, gx))
    (y, index, gx), expected = results
    assert y.flags.c_contiguous
    for got, want, name in zip((y, index, gx), expected, 'y index gx'):
        numpy.testing.assert_array_equal(got, want, name)

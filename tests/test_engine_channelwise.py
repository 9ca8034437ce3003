"""Per-channel reductions (engine.channelwise) against their reference forms, and
independent of which other channels share a call (layers split channels over workers)."""
import numpy as np
import pytest

from cnntrain.engine.channelwise import channel_dot, channel_sum

# (outer, channels, inner): ResNet-20's stages, a 2-D BatchNorm input (inner 1), odd sizes.
SHAPES = [(128, 16, 1024), (128, 64, 64), (7, 13, 1), (3, 5, 37), (1, 1, 1)]


def arrays(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    # A non-zero mean, as activations have: a sum then cancels less than it adds up.
    return [(rng.standard_normal(shape) + 0.5).astype(dtype) for _ in range(2)]


@pytest.mark.parametrize("shape", SHAPES)
def test_sums_and_dots_match_float64_references(shape):
    a, b = arrays(shape, np.float64)
    np.testing.assert_allclose(channel_sum(a), a.sum(axis=(0, 2)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(channel_dot(a, b), (a * b).sum(axis=(0, 2)), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_float32_results_are_as_accurate_as_the_reference_forms(shape):
    a, b = arrays(shape, np.float32)
    exact_sum = a.astype(np.float64).sum(axis=(0, 2))
    exact_dot = (a.astype(np.float64) * b).sum(axis=(0, 2))
    scale_sum = np.abs(a).astype(np.float64).sum(axis=(0, 2))
    scale_dot = np.abs(a.astype(np.float64) * b).sum(axis=(0, 2))
    for got, exact, scale, reference in [
            (channel_sum(a), exact_sum, scale_sum, a.sum(axis=(0, 2))),
            (channel_dot(a, b), exact_dot, scale_dot, (a * b).sum(axis=(0, 2)))]:
        assert got.dtype == np.float32 and got.shape == (shape[1],)
        error = np.abs(got - exact) / scale
        reference_error = np.abs(reference - exact) / scale
        # float32 rounding of sums of up to 131,072 terms; no worse than NumPy's own.
        assert error.max() <= max(2 * reference_error.max(), 1e-6)


@pytest.mark.parametrize("shape", [(128, 16, 1024), (128, 64, 64), (9, 13, 37)])
def test_a_channel_gets_the_same_bits_whatever_channels_share_the_call(shape):
    a, b = arrays(shape, np.float32, seed=1)
    whole_sum, whole_dot = channel_sum(a), channel_dot(a, b)
    c = shape[1]
    for bounds in ([0, 1, c], [0, c // 3, c // 3 + 1, c], [0, c - 1, c]):
        for lo, hi in zip(bounds, bounds[1:]):
            s = slice(lo, hi)
            np.testing.assert_array_equal(channel_sum(a[:, s]), whole_sum[s])
            np.testing.assert_array_equal(channel_dot(a[:, s], b[:, s]), whole_dot[s])

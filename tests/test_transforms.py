"""Spatial transforms against exact properties and an independent numpy reference."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import tensorflow as tf
from reference_code import contrib_rotation_matrices, reference_code_tf, translation_matrices

from invariance_tf import transforms


def numpy_reference(image: np.ndarray, dx: float, dy: float, angle: float) -> np.ndarray:
    """Rotate counter-clockwise (as displayed) about the centre, then translate; zeros outside.

    Written from the definition: the forward map of a content point q is
    q -> c + M (q - c) + t, with M the displayed counter-clockwise rotation in
    (x right, y down) coordinates; each output pixel is the bilinear sample of
    the zero-padded input at the inverse image of its centre.
    """
    h, w, _ = image.shape
    theta = np.deg2rad(angle)
    forward = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    inverse = np.linalg.inv(forward)
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    pad = 2
    padded = np.zeros((h + 2 * pad, w + 2 * pad, image.shape[2]))
    padded[pad : pad + h, pad : pad + w] = image
    out = np.zeros_like(image, dtype=np.float64)
    for y in range(h):
        for x in range(w):
            sx, sy = centre + inverse @ (np.array([x, y]) - np.array([dx, dy]) - centre)
            sx, sy = sx + pad, sy + pad
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            if not (0 <= x0 and x0 + 1 < w + 2 * pad and 0 <= y0 and y0 + 1 < h + 2 * pad):
                continue
            fx, fy = sx - x0, sy - y0
            out[y, x] = (
                (1 - fx) * (1 - fy) * padded[y0, x0]
                + fx * (1 - fy) * padded[y0, x0 + 1]
                + (1 - fx) * fy * padded[y0 + 1, x0]
                + fx * fy * padded[y0 + 1, x0 + 1]
            )
    return out


@pytest.fixture(scope="module")
def unit_images(cifar10_test_slice) -> np.ndarray:
    return cifar10_test_slice[0].astype(np.float32) / 255.0


def test_fast_and_differentiable_agree_on_1000_real_images(unit_images):
    params = transforms.sample_uniform(1000, (3, 3, 30), seed=[4, 2])
    images = np.resize(unit_images, (1000,) + unit_images.shape[1:])
    fast = transforms.transform(images, params).numpy()
    diff = transforms.transform_differentiable(images, params).numpy()
    assert np.abs(fast - diff).max() < 1e-4
    assert np.abs(fast - images).max() > 0.1


@pytest.mark.parametrize("resampling", transforms.RESAMPLINGS)
def test_identity_returns_input(unit_images, resampling):
    zeros = np.zeros((len(unit_images), 3), np.float32)
    np.testing.assert_allclose(transforms.transform(unit_images, zeros, resampling), unit_images, atol=1e-6)
    np.testing.assert_allclose(
        transforms.transform_differentiable(unit_images, zeros, resampling), unit_images, atol=1e-6
    )


@pytest.mark.parametrize("resampling", transforms.RESAMPLINGS)
@pytest.mark.parametrize("fn", [transforms.transform, transforms.transform_differentiable])
def test_rotation_by_90_degrees_is_rot90_counter_clockwise(fn, resampling, unit_images):
    images = unit_images[:8]
    for angle, k in ((90.0, 1), (-90.0, 3), (180.0, 2)):
        params = np.tile([[0.0, 0.0, angle]], (len(images), 1)).astype(np.float32)
        np.testing.assert_allclose(fn(images, params, resampling), tf.image.rot90(images, k), atol=1e-5)


@pytest.mark.parametrize("resampling", transforms.RESAMPLINGS)
@pytest.mark.parametrize("fn", [transforms.transform, transforms.transform_differentiable])
def test_integer_translation_is_a_shift_with_zero_fill(fn, resampling, unit_images):
    images = unit_images[:4]
    for dx, dy in ((2, 0), (0, -3), (-1, 3)):
        expected = np.zeros_like(images)
        h, w = images.shape[1:3]
        expected[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[
            :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
        ]
        params = np.tile([[dx, dy, 0.0]], (len(images), 1)).astype(np.float32)
        np.testing.assert_allclose(fn(images, params, resampling), expected, atol=1e-5)


def test_matches_independent_numpy_reference(unit_images):
    rng = np.random.default_rng(0)
    images = unit_images[:12]
    params = (rng.uniform(-1, 1, (12, 3)) * [3, 3, 30]).astype(np.float32)
    params[0] = [3, -3, 30]
    fast = transforms.transform(images, params).numpy()
    for image, p, got in zip(images, params, fast):
        np.testing.assert_allclose(got, numpy_reference(image, *p), atol=1e-4)


@pytest.mark.parametrize("resampling", transforms.RESAMPLINGS)
def test_transform_keeps_integer_dtype_and_shape(resampling):
    images = np.random.default_rng(1).integers(0, 256, (3, 16, 20, 1)).astype(np.uint8)
    params = np.array([[0, 0, 0], [2, -1, 0], [0, 0, 90]], np.float32)
    out = transforms.transform(images, params, resampling).numpy()
    assert out.dtype == np.uint8 and out.shape == images.shape
    np.testing.assert_array_equal(out[0], images[0])
    np.testing.assert_array_equal(out[1, :-1, 2:], images[1, 1:, :-2])
    np.testing.assert_array_equal(out[1, -1], 0)
    np.testing.assert_array_equal(out[1, :, :2], 0)
    square = np.random.default_rng(2).integers(0, 256, (1, 16, 16, 1)).astype(np.uint8)
    rotated = transforms.transform(square, params[2:], resampling).numpy()
    assert rotated.dtype == np.uint8
    np.testing.assert_allclose(rotated, np.rot90(square, axes=(1, 2)), atol=1)  # uint8 truncates 224.99999


@pytest.mark.parametrize("resampling", transforms.RESAMPLINGS)
def test_gradients_match_central_finite_differences(unit_images, resampling):
    images = tf.constant(unit_images[:4])
    params = tf.constant([[0.37, -1.21, 7.3], [-2.2, 0.6, -17.9], [1.4, 2.3, 23.1], [-0.8, -2.6, -4.4]])
    targets = tf.constant(unit_images[4:8], tf.float64)

    def loss(p):
        out = tf.cast(transforms.transform_differentiable(images, p, resampling), tf.float64)
        return tf.reduce_sum(tf.square(out - targets), axis=[1, 2, 3])

    with tf.GradientTape() as tape:
        tape.watch(params)
        value = tf.reduce_sum(loss(params))
    analytic = tape.gradient(value, params).numpy()
    numeric = np.zeros_like(analytic)
    for j, eps in enumerate((1e-3, 1e-3, 1e-2)):
        step = np.zeros((1, 3), np.float32)
        step[0, j] = eps
        numeric[:, j] = (loss(params + step) - loss(params - step)).numpy() / (2 * eps)
    relative = np.linalg.norm(analytic - numeric, axis=0) / np.linalg.norm(numeric, axis=0)
    assert relative.max() < 1e-2, relative


@pytest.mark.parametrize("resampling", transforms.RESAMPLINGS)
def test_gradient_reaches_images(resampling):
    images = tf.random.uniform((2, 8, 8, 3))
    with tf.GradientTape() as tape:
        tape.watch(images)
        total = tf.reduce_sum(
            transforms.transform_differentiable(images, tf.constant([[0.5, 0.2, 10.0]] * 2), resampling)
        )
    grad = tape.gradient(total, images)
    assert grad is not None and float(tf.reduce_sum(grad)) > 0


def numpy_bilinear(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Float64 bilinear sampling, zeros outside: output (x, y) reads (a0 x + a1 y + a2, b0 x + b1 y + b2)."""
    b, h, w, _ = images.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    a0, a1, a2, b0, b1, b2 = (m[:, None, None] for m in np.asarray(matrices, np.float64).T)
    sx, sy = a0 * xs + a1 * ys + a2, b0 * xs + b1 * ys + b2
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = sx - x0, sy - y0
    batch = np.arange(b)[:, None, None]
    out = np.zeros(images.shape)
    for xi, yi, weight in (
        (x0, y0, (1 - fx) * (1 - fy)),
        (x0 + 1, y0, fx * (1 - fy)),
        (x0, y0 + 1, (1 - fx) * fy),
        (x0 + 1, y0 + 1, fx * fy),
    ):
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        out += np.where(inside, weight, 0.0)[..., None] * images[batch, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
    return out


def reference_code_numpy(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """The reference pipeline in float64 numpy: pad, rotate, translate, crop the centre."""
    h, w = images.shape[1:3]
    x = np.pad(np.asarray(images, np.float64), [(0, 0), (h // 2, h // 2), (w // 2, w // 2), (0, 0)])
    x = numpy_bilinear(x, contrib_rotation_matrices(np.deg2rad(params[:, 2].astype(np.float64)), *x.shape[1:3]))
    x = numpy_bilinear(x, translation_matrices(params))
    return x[:, h // 2 : h // 2 + h, w // 2 : w // 2 + w]


def draws(kind: str, n: int = 100, seed: int = 0) -> np.ndarray:
    """`n` transformations: uniform within (3, 3, 30), or only the rotation / translation part of such draws."""
    rng = np.random.default_rng(seed)
    params = (rng.uniform(-1, 1, (n, 3)) * [3, 3, 30]).astype(np.float32)
    params[0] = [3, -3, 30]
    if kind == "rotation":
        params[:, :2] = 0
    elif kind == "translation":
        params[:, 2] = 0
    elif kind == "integer_translation":
        params[:, :2], params[:, 2] = np.round(params[:, :2]), 0
    return params


@pytest.fixture(scope="module")
def pixel_images(cifar10_test_slice) -> np.ndarray:
    """The 100 real test images as float32 on the 0-255 scale."""
    return cifar10_test_slice[0].astype(np.float32)


@pytest.mark.parametrize("kind", ["combined", "rotation", "translation"])
def test_reference_resampling_matches_the_reference_code(pixel_images, kind):
    params = draws(kind)
    got = transforms.transform(pixel_images, params, "reference").numpy()
    assert np.abs(got - pixel_images).mean() > 5  # the draws do move the images
    assert np.abs(got - reference_code_tf(pixel_images, params)).max() < 1e-4
    # Exact arithmetic: float32 rounding of coordinates up to 63 moves 0-255 pixels by ~1e-3.
    assert np.abs(got - reference_code_numpy(pixel_images, params)).max() < 1e-2


def test_reference_resampling_pads_by_half_of_any_image_size(pixel_images):
    images = pixel_images[:20, :15, :26]  # real images cropped to an odd height
    params = draws("combined", n=20, seed=1)
    got = transforms.transform(images, params, "reference").numpy()
    assert got.shape == images.shape
    assert np.abs(got - reference_code_tf(images, params)).max() < 1e-4
    assert np.abs(got - reference_code_numpy(images, params)).max() < 1e-2
    np.testing.assert_allclose(transforms.transform_differentiable(images, params, "reference"), got, atol=1e-4)


def test_reference_differentiable_agrees_with_fast_and_has_gradients(pixel_images):
    params = tf.constant(draws("combined", seed=2))
    fast = transforms.transform(pixel_images, params, "reference").numpy()
    targets = tf.constant(np.roll(pixel_images, 1, axis=0))
    with tf.GradientTape() as tape:
        tape.watch(params)
        out = transforms.transform_differentiable(pixel_images, params, "reference")
        loss = tf.reduce_sum(tf.square(out - targets))
    assert np.abs(out.numpy() - fast).max() < 1e-4
    grad = tape.gradient(loss, params).numpy()
    assert np.all(np.isfinite(grad)) and np.all(grad != 0)


def test_reference_differentiable_compiles_with_xla(pixel_images):
    compiled = tf.function(transforms.transform_differentiable, jit_compile=True)
    params = tf.constant(draws("combined", seed=3))
    fast = transforms.transform(pixel_images, params, "reference").numpy()
    # XLA fuses the coordinate arithmetic differently: float32 rounding, ~1e-3 on the 0-255 scale.
    assert np.abs(compiled(pixel_images, params, "reference").numpy() - fast).max() < 1e-2
    assert np.abs(compiled(pixel_images, params, "composed").numpy() - fast).mean() > 0.5


@pytest.mark.parametrize("fn", [transforms.transform, transforms.transform_differentiable])
def test_reference_equals_composed_for_pure_rotations_and_integer_translations(fn, pixel_images):
    shifts = draws("integer_translation")
    assert np.abs(fn(pixel_images, shifts, "reference").numpy() - fn(pixel_images, shifts).numpy()).max() < 1e-3
    rotations = draws("rotation")
    # Rotating about (31.5, 31.5) of the canvas instead of (15.5, 15.5) rounds the coordinates
    # differently in float32, which moves 0-255 pixels by ~2e-3.
    assert np.abs(fn(pixel_images, rotations, "reference").numpy() - fn(pixel_images, rotations).numpy()).max() < 1e-2


@pytest.mark.parametrize("fn", [transforms.transform, transforms.transform_differentiable])
def test_reference_is_blurrier_than_composed_for_combined_draws(fn, pixel_images):
    params = draws("combined", seed=4)
    reference = fn(pixel_images, params, "reference").numpy()
    composed = fn(pixel_images, params, "composed").numpy()
    assert np.abs(reference - composed).mean() > 0.5
    sharpness = [np.abs(np.diff(x, axis=2)).mean() for x in (reference, composed)]
    assert sharpness[0] < sharpness[1]


@pytest.mark.parametrize("bad", ["bilinear", "Reference", "", None])
@pytest.mark.parametrize("fn", [transforms.transform, transforms.transform_differentiable])
def test_unknown_resampling_is_refused(fn, bad, unit_images):
    message = f"resampling={bad!r} is invalid: valid resamplings are ['composed', 'reference']"
    with pytest.raises(ValueError, match=re.escape(message)):
        fn(unit_images[:2], np.zeros((2, 3), np.float32), bad)
    with pytest.raises(ValueError, match=re.escape(message)):
        transforms.validate_resampling(bad)
    assert [transforms.validate_resampling(name) for name in transforms.RESAMPLINGS] == ["composed", "reference"]


def test_grid_is_the_cartesian_product():
    g = transforms.grid()
    assert g.shape == (775, 3) and g.dtype == np.float32
    expected = np.array(
        list(itertools.product(np.linspace(-3, 3, 5), np.linspace(-3, 3, 5), np.linspace(-30, 30, 31))), np.float32
    )
    np.testing.assert_array_equal(g, expected)
    assert np.any(np.all(g == 0, axis=1))
    assert len(np.unique(g, axis=0)) == 775


def test_grid_respects_custom_limits_and_granularity():
    g = transforms.grid((1, 2, 10), (3, 1, 5))
    assert g.shape == (15, 3)
    assert set(g[:, 1]) == {0.0} and g[:, 0].max() == 1 and g[:, 2].min() == -10


def test_sample_uniform_is_reproducible_and_within_limits():
    a = transforms.sample_uniform(5000, (3, 2, 30), seed=[1, 7]).numpy()
    b = transforms.sample_uniform(5000, (3, 2, 30), seed=[1, 7]).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.all(np.abs(a) <= [3, 2, 30])
    np.testing.assert_allclose(np.abs(a).mean(axis=0), [1.5, 1.0, 15.0], rtol=0.05)


@pytest.mark.parametrize("bad", [(3, 3), (3, -1, 30), (3, 3, float("nan")), 3.0, ("a", "b", "c")])
def test_bad_limits_raise(bad):
    message = f"limits={bad!r} is invalid: must be 3 values >= 0: dx pixels, dy pixels, angle degrees"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        transforms.grid(bad)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        transforms.validate_limits(bad)

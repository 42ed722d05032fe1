"""Spatial transformations: rotation about the image centre followed by a translation.

A transformation is a float32 row `(dx, dy, angle)`:

- `dx`: pixels to the right (positive moves the content right),
- `dy`: pixels down (positive moves the content down),
- `angle`: degrees, counter-clockwise as the image is displayed (row 0 at the
  top), which is the direction of `tf.image.rot90` and `np.rot90`.

The transformed image is the input rotated about its centre `((W-1)/2, (H-1)/2)`
and then translated, sampled bilinearly, with zeros outside the input
("black canvas"). This is the geometry of the paper's reference code (pad
32x32 to 64x64 with zeros, rotate, translate, crop the centre), done as one
resampling instead of two.

An output pixel `p` reads the input at `c + R(angle) (p - t - c)`, where `c`
is the centre, `t = (dx, dy)` and `R` rotates by `angle` in (x right, y down)
coordinates.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

DEFAULT_LIMITS = (3.0, 3.0, 30.0)
DEFAULT_GRANULARITY = (5, 5, 31)


def validate_limits(limits: Sequence[float]) -> tuple[float, float, float]:
    """Returns `limits` as a float triple, raising ValueError if any is negative or not 3 values."""
    values = tuple(float(v) for v in limits)
    if len(values) != 3:
        raise ValueError(
            f"limits must be 3 values (dx pixels, dy pixels, angle degrees); got {tuple(limits)!r}"
        )
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"limits must be finite and >= 0 (dx, dy, angle); got {values!r}")
    return values


def _input_coordinates_map(params: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Affine maps from output to input pixel coordinates, [B, 6] as (a0, a1, a2, b0, b1, b2).

    `x_in = a0 x + a1 y + a2`, `y_in = b0 x + b1 y + b2`, the layout of
    `ImageProjectiveTransformV3`'s first six transform entries.
    """
    params = tf.convert_to_tensor(params, tf.float32)
    dx, dy, angle = tf.unstack(params, num=3, axis=-1)
    theta = angle * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    cx = (width - 1) / 2.0
    cy = (height - 1) / 2.0
    u = -dx - cx
    v = -dy - cy
    a2 = cx + cos * u - sin * v
    b2 = cy + sin * u + cos * v
    return tf.stack([cos, -sin, a2, sin, cos, b2], axis=-1)


def transform(images: tf.Tensor, params: tf.Tensor) -> tf.Tensor:
    """Rotates and translates each image by its own `(dx, dy, angle)` row (fast path).

    Args:
        images: float tensor [B, H, W, C].
        params: float tensor [B, 3] of `(dx, dy, angle)`, see the module docstring.

    Returns:
        The transformed images, [B, H, W, C], same dtype as `images`.
        Not differentiable with respect to `params`; use
        `transform_differentiable` for that.
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    height, width = images.shape[1], images.shape[2]
    maps = _input_coordinates_map(params, height, width)
    projective = tf.concat([maps, tf.zeros_like(maps[:, :2])], axis=-1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=projective,
        output_shape=shape[1:3],
        fill_value=tf.zeros([], tf.float32),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def transform_differentiable(images: tf.Tensor, params: tf.Tensor) -> tf.Tensor:
    """Same result as `transform`, differentiable with respect to `params` and `images`.

    Bilinear sampling from plain TF ops (gathers and weights), so gradients of
    any loss of the output flow back to the transformation parameters; S-PGD
    needs this.

    Args:
        images: float32 tensor [B, H, W, C].
        params: float32 tensor [B, 3] of `(dx, dy, angle)`.

    Returns:
        float32 tensor [B, H, W, C].
    """
    images = tf.convert_to_tensor(images, tf.float32)
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    a0, a1, a2, b0, b1, b2 = tf.unstack(
        _input_coordinates_map(params, height, width)[:, :, None, None], axis=1
    )
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float32),
                         np.arange(width, dtype=np.float32), indexing="ij")
    x_in = a0 * xs + a1 * ys + a2
    y_in = b0 * xs + b1 * ys + b2
    x0 = tf.floor(x_in)
    y0 = tf.floor(y_in)
    wx1 = x_in - x0
    wy1 = y_in - y0
    x0 = tf.cast(x0, tf.int32)
    y0 = tf.cast(y0, tf.int32)

    flat = tf.reshape(images, [-1, channels])
    base = tf.range(tf.shape(images)[0])[:, None, None] * (height * width)

    def corner(xi: tf.Tensor, yi: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
        inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
        index = base + tf.clip_by_value(yi, 0, height - 1) * width + tf.clip_by_value(xi, 0, width - 1)
        weight = tf.where(inside, weight, 0.0)
        return tf.gather(flat, index) * weight[..., None]

    return (
        corner(x0, y0, (1.0 - wx1) * (1.0 - wy1))
        + corner(x0 + 1, y0, wx1 * (1.0 - wy1))
        + corner(x0, y0 + 1, (1.0 - wx1) * wy1)
        + corner(x0 + 1, y0 + 1, wx1 * wy1)
    )


def grid(
    limits: Sequence[float] = DEFAULT_LIMITS,
    granularity: Sequence[int] = DEFAULT_GRANULARITY,
) -> np.ndarray:
    """The grid attack's transformations, float32 [prod(granularity), 3].

    The Cartesian product of `linspace(-l, l, g)` for each of dx, dy, angle,
    in (dx, dy, angle) order with angle varying fastest. The default is the
    paper's 5 x 5 x 31 = 775 grid, which contains the identity.
    """
    limits = validate_limits(limits)
    granularity = tuple(int(g) for g in granularity)
    if len(granularity) != 3 or any(g < 1 for g in granularity):
        raise ValueError(f"granularity must be 3 integers >= 1; got {granularity!r}")
    axes = [np.linspace(-l, l, g) if g > 1 else np.zeros(1) for l, g in zip(limits, granularity)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=-1).astype(np.float32)


def sample_uniform(
    n: int | tf.Tensor, limits: Sequence[float] = DEFAULT_LIMITS, seed: tf.Tensor | Sequence[int] | None = None
) -> tf.Tensor:
    """Draws `n` i.i.d. transformations uniform in `[-limits, limits]`, float32 [n, 3].

    With a stateless `seed` (a shape-[2] integer tensor) the draw is
    reproducible; with `None` it uses TF's global random state.
    """
    high = tf.constant(validate_limits(limits), tf.float32)
    shape = tf.stack([tf.convert_to_tensor(n, tf.int32), 3])
    if seed is None:
        unit = tf.random.uniform(shape, -1.0, 1.0)
    else:
        unit = tf.random.stateless_uniform(shape, seed, -1.0, 1.0)
    return unit * high


def project(params: tf.Tensor, limits: Sequence[float] = DEFAULT_LIMITS) -> tf.Tensor:
    """Clips each coordinate of `params` [..., 3] to `[-limit, limit]`."""
    high = tf.constant(validate_limits(limits), tf.float32)
    return tf.clip_by_value(params, -high, high)

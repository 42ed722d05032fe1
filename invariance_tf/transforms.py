"""Spatial transformations: rotation about the image centre followed by a translation.

A transformation is a float32 row `(dx, dy, angle)`:

- `dx`: pixels to the right (positive moves the content right),
- `dy`: pixels down (positive moves the content down),
- `angle`: degrees, counter-clockwise as the image is displayed (row 0 at the
  top), which is the direction of `tf.image.rot90` and `np.rot90`.

The transformed image is the input rotated about its centre `((W-1)/2, (H-1)/2)`
and then translated, with zeros outside the input ("black canvas"). An output
pixel `p` reads the input at `c + R(angle) (p - t - c)`, where `c` is the
centre, `t = (dx, dy)` and `R` rotates by `angle` in (x right, y down)
coordinates.

Two resamplings of this same geometry are available (`RESAMPLINGS`), selected
by the `resampling` argument of `transform` and `transform_differentiable`:

- `"composed"` (the default of training): the rotation and the translation
  composed into one affine map, sampled once, bilinearly.
- `"reference"`: what the paper's reference code does (`resnet.py` of
  ZuowenWang0000/invariance-inducing-regularization-for-spatial-adversarial-attacks):
  pad the image with zeros by `(H//2, W//2)` on each side (32x32 -> 64x64),
  rotate bilinearly about the padded canvas' centre, translate bilinearly,
  then crop the centre `H x W` (the default of evaluation, `EVALUATION_RESAMPLING`:
  the paper's grid numbers were measured so). The geometry is the same as `"composed"`: pure
  rotations and pure translations give the same images up to float32
  rounding; combined draws are blurrier because they are interpolated twice.
  `transform` resamples the 4x larger canvas twice (about 8x the compute of
  `"composed"`); `transform_differentiable` computes the translation for the
  crop only (about 5x), with the same values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from invariance_tf.options import Naming, Rule, check_values

DEFAULT_LIMITS = (3.0, 3.0, 30.0)
DEFAULT_GRANULARITY = (5, 5, 31)
RESAMPLINGS = ("composed", "reference")
EVALUATION_RESAMPLING = "reference"
"""The attacks' default resampling (`invariance_tf.evaluation`): the paper's grid protocol, the stricter of the two."""
VALID_LIMITS = "3 values >= 0: dx pixels, dy pixels, angle degrees"
"""What `are_limits` accepts, as errors state it."""


def are_limits(limits: Any) -> bool:
    """Whether `limits` are 3 finite numbers >= 0: the largest |dx| and |dy| (pixels) and |angle| (degrees)."""
    try:
        values = [float(v) for v in limits]
    except (TypeError, ValueError):
        return False
    return len(values) == 3 and all(math.isfinite(v) and v >= 0 for v in values)


LIMITS_RULE: Rule = ("limits", are_limits, f"must be {VALID_LIMITS}")
"""The one rule on `limits`: `validate_limits` and the adversaries' (`adversaries.check_arguments`)."""

RESAMPLING_RULE: Rule = ("resampling", lambda name: name in RESAMPLINGS, f"valid resamplings are {list(RESAMPLINGS)}")
"""The one rule on `resampling`: `validate_resampling` and the adversaries' (`adversaries.check_arguments`)."""


def validate_limits(limits: Sequence[float]) -> tuple[float, float, float]:
    """Returns `limits` as a float triple, raising ValueError unless they are 3 finite values >= 0 (`LIMITS_RULE`)."""
    check_values(Naming({"limits": limits}), [LIMITS_RULE])
    return tuple(float(v) for v in limits)


def validate_resampling(name: str) -> str:
    """Returns `name` if it is one of `RESAMPLINGS`, raising ValueError otherwise (`RESAMPLING_RULE`).

    Args:
        name: `"composed"` or `"reference"`, see the module docstring.

    Returns:
        `name`, unchanged.
    """
    check_values(Naming({"resampling": name}), [RESAMPLING_RULE])
    return name


def _input_coordinates_map(params: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Affine maps from output to input pixel coordinates, [B, 6] as (a0, a1, a2, b0, b1, b2).

    `x_in = a0 x + a1 y + a2`, `y_in = b0 x + b1 y + b2`, the layout of
    `ImageProjectiveTransformV3`'s first six transform entries. This is the
    whole transformation (rotation, then translation) as one map.
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


def _rotation_map(angle: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Maps [B, 6] of a rotation by `angle` degrees about the centre of a `height x width` canvas.

    The output pixel `p` reads the input at `c + R(angle) (p - c)`; the same
    matrix `[cos, -sin, x_offset, sin, cos, y_offset]` as `tf.contrib.image.rotate`.
    """
    theta = angle * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    return tf.stack([cos, -sin, x_offset, sin, cos, y_offset], axis=-1)


def _translation_map(dx: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    """Maps [B, 6] of a translation by `(dx, dy)` pixels: the output pixel `p` reads the input at `p - t`."""
    one, zero = tf.ones_like(dx), tf.zeros_like(dx)
    return tf.stack([one, zero, -dx, zero, one, -dy], axis=-1)


Window = tuple[int, int, int, int]
"""(top, left, height, width) of the output canvas that a resampling computes."""


def _project(images: tf.Tensor, maps: tf.Tensor, window: Window | None = None) -> tf.Tensor:
    """Bilinear resampling of `images` [B, H, W, C] through `maps` [B, 6] with one fused TF op, zero fill.

    The output is the input's size, or its `window`.
    """
    projective = tf.concat([maps, tf.zeros_like(maps[:, :2])], axis=-1)
    output = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=projective,
        output_shape=tf.shape(images)[1:3],
        fill_value=tf.zeros([], tf.float32),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    if window is None:
        return output
    top, left, height, width = window
    return output[:, top : top + height, left : left + width]


def _sample_bilinear(images: tf.Tensor, maps: tf.Tensor, window: Window | None = None) -> tf.Tensor:
    """Bilinear resampling of float32 `images` [B, H, W, C] through `maps` [B, 6], zero fill.

    The output is the input's size, or only its `window` (the same values, computed for the window's pixels alone).

    The same result as `_project`, from plain TF ops (gathers and weights), so
    it is differentiable with respect to `maps` and `images` and compiles with XLA.
    """
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    top, left, out_height, out_width = (0, 0, height, width) if window is None else window
    a0, a1, a2, b0, b1, b2 = tf.unstack(maps[:, :, None, None], axis=1)
    ys, xs = np.meshgrid(
        np.arange(top, top + out_height, dtype=np.float32),
        np.arange(left, left + out_width, dtype=np.float32),
        indexing="ij",
    )
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


def _reference(images: tf.Tensor, params: tf.Tensor, resample: Callable[..., tf.Tensor]) -> tf.Tensor:
    """The reference code's pipeline: zero-pad, rotate, translate, crop the centre.

    Pads by `(H//2, W//2)` on each side, rotates about the padded canvas'
    centre, then translates, each stage one `resample(images, maps, window)`
    call; the translation's window is the central `H x W` (the crop), so a
    sampler that computes only its window does a quarter of the canvas.
    """
    height, width = images.shape[1], images.shape[2]
    pad_y, pad_x = height // 2, width // 2
    dx, dy, angle = tf.unstack(tf.convert_to_tensor(params, tf.float32), num=3, axis=-1)
    padded = tf.pad(images, [[0, 0], [pad_y, pad_y], [pad_x, pad_x], [0, 0]])
    rotated = resample(padded, _rotation_map(angle, height + 2 * pad_y, width + 2 * pad_x))
    return resample(rotated, _translation_map(dx, dy), (pad_y, pad_x, height, width))


def transform(images: tf.Tensor, params: tf.Tensor, resampling: str = "composed") -> tf.Tensor:
    """Rotates and translates each image by its own `(dx, dy, angle)` row (fast path).

    Uses TF's fused `ImageProjectiveTransformV3` op: one call for
    `"composed"`, two on the padded canvas for `"reference"`.

    Args:
        images: tensor [B, H, W, C], float or integer.
        params: float tensor [B, 3] of `(dx, dy, angle)`: pixels right, pixels
            down, degrees counter-clockwise as displayed; see the module docstring.
        resampling: `"composed"` (one bilinear resampling) or `"reference"`
            (the paper's reference code: pad, rotate, translate, crop; two
            bilinear resamplings). See the module docstring.

    Returns:
        The transformed images, [B, H, W, C], same dtype as `images` (for
        `"reference"` the intermediate canvas is float32; integer outputs are
        truncated, as the op does for `"composed"`).
        Not differentiable with respect to `params`; use
        `transform_differentiable` for that.

    Raises:
        ValueError: if `resampling` is not one of `RESAMPLINGS`.
    """
    images = tf.convert_to_tensor(images)
    if validate_resampling(resampling) == "composed":
        return _project(images, _input_coordinates_map(params, images.shape[1], images.shape[2]))
    return tf.cast(_reference(tf.cast(images, tf.float32), params, _project), images.dtype)


def transform_differentiable(images: tf.Tensor, params: tf.Tensor, resampling: str = "composed") -> tf.Tensor:
    """Same result as `transform`, differentiable with respect to `params` and `images`.

    Bilinear sampling from plain TF ops (gathers and weights), so gradients of
    any loss of the output flow back to the transformation parameters; S-PGD
    needs this. XLA-compilable (`tf.function(..., jit_compile=True)` with
    `resampling` as a Python string).

    Args:
        images: float32 tensor [B, H, W, C].
        params: float32 tensor [B, 3] of `(dx, dy, angle)`: pixels right,
            pixels down, degrees counter-clockwise as displayed.
        resampling: `"composed"` (one bilinear sampling) or `"reference"`
            (pad, rotate, translate, crop: the same sampler applied twice to
            the padded canvas). See the module docstring.

    Returns:
        float32 tensor [B, H, W, C].

    Raises:
        ValueError: if `resampling` is not one of `RESAMPLINGS`.
    """
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    if validate_resampling(resampling) == "composed":
        return _sample_bilinear(images, _input_coordinates_map(params, images.shape[1], images.shape[2]))
    return _reference(images, params, _sample_bilinear)


transform_xla = tf.function(transform_differentiable, jit_compile=True)
"""`transform_differentiable` compiled by XLA: the fastest resampling on CPU, used by training and evaluation.

`transform_xla(images, params, resampling)` with `resampling` a Python string. On 2 CPU cores it resampled
1,280 CIFAR-10 images 4.7x faster than `transform` for "composed" and 5.6x for "reference" (whose two
`ImageProjectiveTransformV3` calls on the padded canvas made the reference-resampled A.T. step 1.54x its limit,
against 1.12x with this; `benchmarks.step_limits`); it agrees with `transform` to float rounding (< 2e-3 per
pixel on the 0-255 scale).
"""


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
    axes = [np.linspace(-limit, limit, g) if g > 1 else np.zeros(1) for limit, g in zip(limits, granularity)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=-1).astype(np.float32)


def grid_axes(
    limits: Sequence[float] = DEFAULT_LIMITS, granularity: Sequence[int] = DEFAULT_GRANULARITY
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The dx, dy and angle values of the grid, each sorted ascending."""
    points = grid(limits, granularity).reshape(*granularity, 3)
    return points[:, 0, 0, 0], points[0, :, 0, 1], points[0, 0, :, 2]


def as_grid(per_transform_accuracy: np.ndarray, granularity: Sequence[int] = DEFAULT_GRANULARITY) -> np.ndarray:
    """The per-transform accuracy vector as an array [dx, dy, angle]."""
    values = np.asarray(per_transform_accuracy, np.float64)
    size = int(np.prod(granularity))
    if values.shape != (size,):
        raise ValueError(
            f"per_transform_accuracy must be a vector of {size} = {' x '.join(map(str, granularity))} "
            f"accuracies in transforms.grid order; got shape {values.shape}"
        )
    return values.reshape(*granularity)


def per_angle_accuracy(
    per_transform_accuracy: np.ndarray, granularity: Sequence[int] = DEFAULT_GRANULARITY
) -> np.ndarray:
    """Accuracy at each angle of the grid, averaged over its translations: [angles]."""
    return as_grid(per_transform_accuracy, granularity).mean(axis=(0, 1))


def per_shift_accuracy(
    per_transform_accuracy: np.ndarray, granularity: Sequence[int] = DEFAULT_GRANULARITY
) -> np.ndarray:
    """Accuracy at each translation of the grid, averaged over its angles: [dx, dy]."""
    return as_grid(per_transform_accuracy, granularity).mean(axis=2)


def angle_translation_maps(
    per_transform_accuracy: np.ndarray, granularity: Sequence[int] = DEFAULT_GRANULARITY
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy per (dx, angle), averaged over dy, and per (dy, angle), averaged over dx: [dx, angle], [dy, angle]."""
    values = as_grid(per_transform_accuracy, granularity)
    return values.mean(axis=1), values.mean(axis=0)


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
        unit = stateless_uniform(shape, seed, -1.0, 1.0)
    return unit * high


_XLA_SEED_MASK = 0x7FFFFFFF


def xla_safe_seed(seed: tf.Tensor | Sequence[int]) -> tf.Tensor:
    """`seed` (int64 [..., 2]) with each word reduced to its low 31 bits, so that XLA reads it as TF's kernels do.

    TF's kernels make a stateless op's key from both 64-bit seed words; XLA (TF 2.21) from their low 32 bits only,
    so seeds outside [0, 2**31) draw other values compiled than uncompiled. Words in that range are unchanged.
    """
    return tf.bitwise.bitwise_and(tf.convert_to_tensor(seed, tf.int64), _XLA_SEED_MASK)


def split_seed(seed: tf.Tensor | Sequence[int], count: int) -> tf.Tensor:
    """`count` independent stateless seeds, int64 [count, 2], from `seed`: `tf.random.split`, `xla_safe_seed`."""
    return xla_safe_seed(tf.random.split(tf.convert_to_tensor(seed, tf.int64), count))


_FLOAT32_MANTISSA = 0x7FFFFF
_FLOAT32_ONE = 0x3F800000


def stateless_uniform(
    shape: tf.Tensor | Sequence[int], seed: tf.Tensor | Sequence[int], minval: float, maxval: float
) -> tf.Tensor:
    """float32 draws uniform in `[minval, maxval)`: `tf.random.stateless_uniform`'s, compiled or not.

    Under XLA, `tf.random.stateless_uniform` gives other floats for the same seed than TF's kernels (TF 2.21 on
    CPU: none of 48 draws agreed), so a step compiled with `jit_compile=True` would draw other transformations than
    the same step uncompiled. Its raw 32-bit words agree, so this draws those and turns each into a float as TF's
    kernels do (its 23 low bits as the mantissa of a float in [1, 2), minus 1): the very values of
    `tf.random.stateless_uniform(shape, seed, minval, maxval)` without XLA, also under XLA.

    Args:
        shape: the output's shape, a 1-D integer tensor or sequence.
        seed: a stateless seed, integer [2].
        minval: the lower bound, included.
        maxval: the upper bound, excluded.

    Returns:
        float32 tensor of `shape`.
    """
    bits = tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.uint32)
    mantissa = tf.bitwise.bitwise_or(tf.bitwise.bitwise_and(bits, _FLOAT32_MANTISSA), _FLOAT32_ONE)
    return (tf.bitcast(mantissa, tf.float32) - 1.0) * (maxval - minval) + minval


def project(params: tf.Tensor, limits: Sequence[float] = DEFAULT_LIMITS) -> tf.Tensor:
    """Clips each coordinate of `params` [..., 3] to `[-limit, limit]`."""
    high = tf.constant(validate_limits(limits), tf.float32)
    return tf.clip_by_value(params, -high, high)

"""The paper's reference code's resampling, rebuilt for tests from its TF1 calls, independently of transforms.py.

The reference (resnet.py of ZuowenWang0000/invariance-inducing-regularization-for-spatial-adversarial-attacks) does
    x = tf.pad(x, [[0, 0], [16, 16], [16, 16], [0, 0]], "constant")
    x = tf.contrib.image.rotate(x, rot, interpolation="BILINEAR")
    x = tf.contrib.image.transform(x, [1, 0, -tx, 0, 1, -ty, 0, 0], interpolation="BILINEAR")
    x = tf.image.resize_image_with_crop_or_pad(x, 32, 32)
with the pad generalised here to (H//2, W//2). Images are on the 0-255 scale.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def contrib_transform(images: tf.Tensor, matrices: tf.Tensor) -> tf.Tensor:
    """tf.contrib.image.transform: output (x, y) reads the input at (a0 x + a1 y + a2, b0 x + b1 y + b2)."""
    matrices = tf.concat([matrices, tf.zeros_like(matrices[:, :2])], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=matrices,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def contrib_rotation_matrices(radians, height: int, width: int):
    """tf.contrib.image.angles_to_projective_transforms: counter-clockwise about ((W-1)/2, (H-1)/2).

    Works on TF tensors and numpy arrays alike (the formulas of the TF1 source).
    """
    cos, sin = (tf.cos(radians), tf.sin(radians)) if tf.is_tensor(radians) else (np.cos(radians), np.sin(radians))
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    stack = tf.stack if tf.is_tensor(radians) else np.stack
    return stack([cos, -sin, x_offset, sin, cos, y_offset], axis=1)


def translation_matrices(params: np.ndarray) -> np.ndarray:
    """The reference's [1, 0, -tx, 0, 1, -ty] rows, float64 [B, 6]."""
    one, zero = np.ones(len(params)), np.zeros(len(params))
    return np.stack([one, zero, -params[:, 0], zero, one, -params[:, 1]], axis=1).astype(np.float64)


def reference_code_tf(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """The reference pipeline from TF ops, float32 as the reference ran it."""
    h, w = images.shape[1:3]
    x = tf.pad(tf.constant(images, tf.float32), [[0, 0], [h // 2, h // 2], [w // 2, w // 2], [0, 0]], "constant")
    radians = tf.constant(params[:, 2], tf.float32) * (math.pi / 180.0)
    x = contrib_transform(x, contrib_rotation_matrices(radians, x.shape[1], x.shape[2]))
    x = contrib_transform(x, tf.constant(translation_matrices(params), tf.float32))
    return tf.image.resize_with_crop_or_pad(x, h, w).numpy()

"""`InputConvention`: raw pixels to what a classifier's owner feeds it; the one statement of that rule.

Every transformation here acts on raw pixel values (0-255, the black canvas 0). A classifier written for another
input (images in [0, 1], or normalised by a mean and std) sees the transformed raw image through this layer, in
`trainers.evaluate` (`evaluation.Classifier`) and in fine-tuning (`networks.pretrained`) alike; `model_files`
states the other rules of a classifier from disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

INPUT_RANGES = {"0-255": 1.0, "0-1": 1.0 / 255.0}
"""Pixel scales a classifier may expect, as the factor that takes raw pixels (0-255) to it."""
PER_CHANNEL = "give 1 value or {channels} (one per channel of the images)"
"""What a `mean` or `std` that does not fit the images' channels should be (`fits_channels`)."""


def fits_channels(values: Sequence[float] | None, channels: int) -> bool:
    """Whether a `mean` or `std` of `values` fits images of `channels` channels: none, 1 value or one per channel."""
    return len(values or ()) in (0, 1, channels)


@keras.saving.register_keras_serializable(package="invariance_tf")
class InputConvention(keras.layers.Layer):
    """Maps raw pixels [N, H, W, C] (0-255) to `(pixels * scale - mean) / std`, the input a classifier expects.

    Args:
        input_range: the pixel scale the classifier expects, a key of `INPUT_RANGES`: "0-255" (scale 1) or
            "0-1" (scale 1/255).
        mean: per-channel mean subtracted after rescaling, in the `input_range` scale: 1 value or one per
            channel; None or empty: 0.
        std: per-channel standard deviation divided by after `mean`, in that scale, each > 0; None or
            empty: 1.
        **kwargs: `keras.layers.Layer` arguments; the dtype defaults to float32, so raw pixels are never
            rounded to a mixed policy's compute dtype before rescaling.

    The black canvas of a transformation (raw 0) becomes `-mean / std`, as it would for the owner's own
    pipeline on a black image.
    """

    def __init__(
        self,
        input_range: str = "0-255",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **kwargs: Any,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if input_range not in INPUT_RANGES:
            raise ValueError(f"Unknown input_range {input_range!r}; valid ranges are {list(INPUT_RANGES)}")
        self.input_range = input_range
        self.mean = _per_channel("mean", mean)
        self.std = _per_channel("std", std)
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be > 0 per channel (it divides the pixels); got {list(self.std)}")

    @property
    def is_identity(self) -> bool:
        """Whether the classifier takes raw pixels as they are (0-255, no mean, no std)."""
        return self.input_range == "0-255" and self.mean is None and self.std is None

    def call(self, images):
        images = ops.cast(images, self.compute_dtype) * INPUT_RANGES[self.input_range]
        if self.mean is not None:
            images = images - ops.convert_to_tensor(self.mean, self.compute_dtype)
        if self.std is not None:
            images = images / ops.convert_to_tensor(self.std, self.compute_dtype)
        return images

    def describe(self) -> str:
        """The input this convention gives, in words: "raw pixel values (0-255)", "pixel values in [0, 1]", ..."""
        scale = "raw pixel values (0-255)" if self.input_range == "0-255" else "pixel values in [0, 1]"
        steps = [f"{name} {list(values)}" for name, values in (("- mean", self.mean), ("/ std", self.std)) if values]
        return f"{scale}, then {' '.join(steps)}" if steps else scale

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), **self.settings()}

    def settings(self) -> dict:
        """`input_range`, `mean` and `std` as JSON values (lists or None): what a run records and flags set."""
        return {
            "input_range": self.input_range,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
        }


def _per_channel(name: str, values: Sequence[float] | None) -> tuple[float, ...] | None:
    """`values` as a tuple of floats, None when None or empty; raises ValueError unless they are finite numbers."""
    if values is None or not len(values):
        return None
    array = np.asarray(values, np.float64).ravel()
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be one or more finite numbers (per channel); got {list(values)}")
    return tuple(float(value) for value in array)

"""How far a network's logits move under the exact symmetries of the pixel grid: quarter-turns and flips.

A diagnostic for G-networks, whose invariant head makes their logits invariant to their group by construction
(up to float rounding), where the sampling grid allows it: `invariance_tf.layers.gconv` says when (stride-2 'same'
convs need sides 1 mod 4, e.g. 33; 2x2 pools need sides divisible by their strides' product, e.g. 32). The
transformations are exact array operations (`np.rot90`, row and column reversal), never interpolation, so any
movement is the network's, not the resampling's. Images are raw pixels [N, H, W, C]; with `side` larger than H
and W they are zero-padded at the bottom and right (the black canvas of `invariance_tf.transforms`) to
side x side first, and the network is called with a copy of itself taking that size.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rot90": lambda x: np.rot90(x, 1, axes=(1, 2)),
    "rot180": lambda x: np.rot90(x, 2, axes=(1, 2)),
    "rot270": lambda x: np.rot90(x, 3, axes=(1, 2)),
    "flip_up_down": lambda x: x[:, ::-1],
    "flip_left_right": lambda x: x[:, :, ::-1],
}
SYMMETRIES = {"p4": ("rot90", "rot180", "rot270"), "p4m": tuple(TRANSFORMS)}


def padded(images: np.ndarray, side: int) -> np.ndarray:
    """`images` zero-padded at the bottom and right to side x side; ValueError if they are larger."""
    height, width = images.shape[1:3]
    if side < max(height, width):
        raise ValueError(f"side must be >= the images' {height}x{width}; got {side}")
    return np.pad(images, ((0, 0), (0, side - height), (0, side - width), (0, 0)))


def with_input_side(network: keras.Model, side: int) -> keras.Model:
    """A copy of the functional `network`, with its weights, that takes side x side images."""
    if network.input_shape[1:3] == (side, side):
        return network
    inputs = keras.Input((side, side, network.input_shape[-1]))
    copy = keras.models.clone_model(network, input_tensors=inputs)
    copy.set_weights(network.get_weights())
    return copy


def initialised_copy(network: keras.Model, seed: int) -> keras.Model:
    """`network`'s architecture with fresh, seeded initial weights: the network before training."""
    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(network)


def logit_drift(
    network: keras.Model, images: np.ndarray, group: str = "p4", side: int | None = None, batch_size: int = 128
) -> dict:
    """Per transformation of `group` ("p4": quarter-turns; "p4m": and flips), how far the logits move.

    Returns `{"group", "side", "transforms": {name: stats}, "max_relative_change"}` with per transformation
    `max_relative_change` (max |logits(T x) - logits(x)| over the images and classes, divided by max |logits(x)|)
    and `prediction_agreement` (the fraction of images whose argmax stays). `side` (None: the images' own size)
    pads the images first (`padded`).
    """
    if group not in SYMMETRIES:
        raise ValueError(f"Unknown symmetry group {group!r}; valid groups are {sorted(SYMMETRIES)}")
    images = np.asarray(images, np.float32)
    side = side or images.shape[1]
    images = padded(images, side)
    model = with_input_side(network, side)

    def logits(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(np.ascontiguousarray(x), batch_size=batch_size, verbose=0), np.float32)

    reference = logits(images)
    scale = float(np.abs(reference).max()) or 1.0
    stats = {}
    for name in SYMMETRIES[group]:
        moved = logits(TRANSFORMS[name](images))
        stats[name] = {
            "max_relative_change": float(np.abs(moved - reference).max() / scale),
            "prediction_agreement": float(np.mean(moved.argmax(-1) == reference.argmax(-1))),
        }
    return {
        "group": group,
        "side": side,
        "transforms": stats,
        "max_relative_change": max(entry["max_relative_change"] for entry in stats.values()),
    }

"""Classifier networks that take raw images (pixel values in [0, 255]) and return logits."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import keras

from invariance_tf.networks.g_resnet import g_resnet
from invariance_tf.networks.g_resnet9 import g_resnet9
from invariance_tf.networks.resnet import resnet
from invariance_tf.networks.resnet9 import resnet9
from invariance_tf.networks.small_cnn import small_cnn

NETWORKS: dict[str, Callable[..., keras.Model]] = {
    "g_resnet": g_resnet,
    "g_resnet9": g_resnet9,
    "resnet": resnet,
    "resnet9": resnet9,
    "small_cnn": small_cnn,
}


def build(name: str, **kwargs) -> keras.Model:
    """Builds the network registered as `name` with the given keyword arguments."""
    if name not in NETWORKS:
        raise ValueError(f"Unknown network {name!r}; valid names are {sorted(NETWORKS)}")
    return NETWORKS[name](**kwargs)


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Layers built inside take `name` ("float32", "mixed_bfloat16", ...) as their dtype policy.

    The previous global policy is restored on exit, so one run's precision never leaks into the next.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)

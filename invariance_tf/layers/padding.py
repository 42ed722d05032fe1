"""Channel padding for parameter-free shortcuts."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="invariance_tf")
class ZeroPadChannels(keras.layers.Layer):
    """Appends `extra` zero channels: the parameter-free ("option A") ResNet shortcut."""

    def __init__(self, extra: int, **kwargs):
        super().__init__(**kwargs)
        self.extra = int(extra)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        before = self.extra // 2
        return tf.pad(inputs, [[0, 0], [0, 0], [0, 0], [before, self.extra - before]])

    def get_config(self) -> dict:
        return {**super().get_config(), "extra": self.extra}

"""Input standardization inside the network."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="invariance_tf")
class PerImageStandardization(keras.layers.Layer):
    """Scales each image to zero mean and unit variance, as `tf.image.per_image_standardization`.

    Puts input normalisation inside the network, so models take raw pixel
    values and the black canvas of a transform stays the value 0 of the raw image.
    """

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.image.per_image_standardization(inputs)

    def get_config(self) -> dict:
        return super().get_config()

"""Group-equivariant convolution layers on the groups p4 and p4m (Cohen & Welling, 2016).

Layout: feature maps are NHWC. A G-feature map with C channels on a group G
has C * |G| flat channels, channel-major and group-minor: flat index c * |G| + g
(GrouPy's TensorFlow layout). Layers that need the group axis view the tensor
as (B, H, W, C, |G|).

Groups: p4 holds the four rotations r = 0..3 by r quarter-turns; p4m adds the
mirror M and holds the eight elements M^m R^r at index t = 4 m + r. R is one
counter-clockwise quarter-turn in the `np.rot90` / `tf.image.rot90` convention
and M flips the row (H) axis, as `tf.image.flip_up_down`. An element acts on an
image or kernel by rotating it r times, then flipping its rows if m = 1.

Equivariance: rotating the input of any layer here by `tf.image.rot90`
rotates its output the same way and rolls the group axis by +1 (new plane t is
old plane t - 1 for p4; for p4m new plane t is old plane `[3,0,1,2,5,6,7,4][t]`).
Kernels are odd, so rotations fix their centre. Equivariance is exact at
stride 1 for any square input; at stride s it needs a sampling grid symmetric
under the rotation: (H - 1) divisible by s for 'same' padding (TensorFlow pads
even excess asymmetrically, e.g. 32x32 inputs at stride 2) and (H - k)
divisible by s for 'valid' padding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import ops

if TYPE_CHECKING:
    import tensorflow as tf

GROUP_ORDERS: dict[str, int] = {"p4": 4, "p4m": 8}
PADDINGS = ("same", "valid")
POOL_MODES = ("max", "mean")


def _d4_matrices() -> np.ndarray:
    """The eight 2x2 integer matrices M^m R^r of D4, indexed by t = 4 m + r."""
    rotation = np.array([[0, -1], [1, 0]])
    mirror = np.array([[-1, 0], [0, 1]])
    return np.stack(
        [np.linalg.matrix_power(mirror, m) @ np.linalg.matrix_power(rotation, r) for m in range(2) for r in range(4)]
    )


def _d4_tables() -> tuple[np.ndarray, np.ndarray]:
    """The D4 product table (t = table[a, b] means element t = a * b) and the inverse of each element."""
    matrices = _d4_matrices()
    flat = matrices.reshape(8, 4)
    products = np.einsum("aij,bjk->abik", matrices, matrices).reshape(8, 8, 1, 4)
    table = np.argmax(np.all(products == flat, axis=-1), axis=-1)
    inverse = np.argmax(table == 0, axis=1)
    return table, inverse


# p4 is the subgroup t = 0..3 of D4, so one table serves both groups.
D4_TABLE, D4_INVERSE = _d4_tables()


def group_order(group: str) -> int:
    """|G| for `group`, which must be one of GROUP_ORDERS."""
    if group not in GROUP_ORDERS:
        raise ValueError(f"Unknown group {group!r}; valid groups are {sorted(GROUP_ORDERS)}")
    return GROUP_ORDERS[group]


def act_on_plane(plane: np.ndarray, element: int) -> np.ndarray:
    """Applies D4 element t = 4 m + r to the two leading (spatial) axes of `plane`."""
    m, r = divmod(element, 4)
    rotated = np.rot90(plane, r, axes=(0, 1))
    return np.flip(rotated, axis=0) if m else rotated


def filter_indices(group: str, kernel_size: int, input_order: int) -> np.ndarray:
    """Gather indices that turn a base kernel into the filter bank of a G-conv.

    The base kernel, viewed as (k, k, |Gi|) positions flattened in that order,
    is gathered at the returned indices of shape (|Go|, k, k, |Gi|). The filter
    for output element g at input element h is g applied spatially to
    base[g^-1 h]; a lifting conv has |Gi| = 1 and uses base[0] for every g.
    """
    order = group_order(group)
    grid = np.arange(kernel_size * kernel_size).reshape(kernel_size, kernel_size)
    elements = np.arange(order)
    indices = np.empty((order, kernel_size, kernel_size, input_order), dtype=np.int32)
    for g in elements:
        source_group = D4_TABLE[D4_INVERSE[g], elements] if input_order > 1 else np.zeros(1, int)
        source_position = act_on_plane(grid, g)
        indices[g] = source_position[:, :, None] * input_order + source_group[None, None, :]
    return indices


def split_group(inputs: tf.Tensor, order: int) -> tf.Tensor:
    """Views flat channels C * |G| as (..., C, |G|)."""
    shape = ops.shape(inputs)
    return ops.reshape(inputs, (*shape[:-1], shape[-1] // order, order))


def merge_group(inputs: tf.Tensor) -> tf.Tensor:
    """Inverse of `split_group`: (..., C, |G|) to flat channels C * |G|."""
    shape = ops.shape(inputs)
    return ops.reshape(inputs, (*shape[:-2], shape[-2] * shape[-1]))


class GroupConv2D(keras.layers.Layer):
    """A G-conv: builds the filter bank from a trainable base kernel, then runs one planar conv.

    Subclasses set `group` and `lifting`. A lifting conv takes planar input
    with Cin channels and has base kernel (k, k, Cin, filters); a group-to-group
    conv takes Cin * |G| channels and has base kernel (k, k, Cin, |G|, filters).
    The output has filters * |G| channels. The bank is rebuilt on every call,
    so gradients reach the base kernel. One bias per output G-channel is
    shared by its |G| planes, as a per-plane bias would break equivariance.
    The default He-normal initialiser counts the input group axis in the
    fan-in, as GrouPy's ResNets do.
    """

    group: str
    lifting: bool

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        strides: int = 1,
        padding: str = "same",
        use_bias: bool = True,
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd so that rotations fix the kernel centre; got {kernel_size}")
        if padding.lower() not in PADDINGS:
            raise ValueError(f"Unknown padding {padding!r}; valid paddings are {list(PADDINGS)}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = padding.lower()
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.group_order = group_order(self.group)
        self.input_order = 1 if self.lifting else self.group_order
        self.indices = filter_indices(self.group, self.kernel_size, self.input_order)

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        if channels is None or channels % self.input_order:
            raise ValueError(
                f"{type(self).__name__} needs input channels divisible by "
                f"{self.input_order}; got input shape {input_shape}"
            )
        self.input_channels = channels // self.input_order
        group_axis = () if self.lifting else (self.input_order,)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size, self.kernel_size, self.input_channels, *group_axis, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.filters,), initializer=self.bias_initializer, regularizer=self.bias_regularizer
            )

    @property
    def bank_shape(self) -> tuple[int, int, int, int]:
        """Shape (k, k, Cin * |Gi|, filters * |Go|) of the filter bank: that of the equivalent planar conv's kernel."""
        k = self.kernel_size
        return (k, k, self.input_channels * self.input_order, self.filters * self.group_order)

    @property
    def expanded_kernel(self) -> tf.Tensor:
        """The filter bank (k, k, Cin * |Gi|, filters * |Go|) in the flat channel layout."""
        k, cin, gi, go = self.kernel_size, self.input_channels, self.input_order, self.group_order
        base = ops.reshape(self.kernel, (k, k, cin, gi, self.filters))
        base = ops.reshape(ops.transpose(base, (0, 1, 3, 2, 4)), (k * k * gi, cin, self.filters))
        bank = ops.take(base, self.indices, axis=0)  # (go, k, k, gi, cin, filters)
        bank = ops.transpose(bank, (1, 2, 4, 3, 5, 0))  # (k, k, cin, gi, filters, go)
        return ops.reshape(bank, (k, k, cin * gi, self.filters * go))

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        outputs = ops.conv(
            inputs, self.expanded_kernel, strides=self.strides, padding=self.padding, data_format="channels_last"
        )
        if self.use_bias:
            outputs = outputs + ops.repeat(self.bias, self.group_order)
        return outputs

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
        }


@keras.saving.register_keras_serializable(package="invariance_tf")
class P4ConvZ2(GroupConv2D):
    """Lifting conv from planar images to p4: output plane r uses the base kernel turned r times counter-clockwise."""

    group = "p4"
    lifting = True


@keras.saving.register_keras_serializable(package="invariance_tf")
class P4ConvP4(GroupConv2D):
    """p4 to p4 conv: for output rotation s the base kernel is turned s times and its input group axis rolled by +s."""

    group = "p4"
    lifting = False


@keras.saving.register_keras_serializable(package="invariance_tf")
class P4MConvZ2(GroupConv2D):
    """Lifting conv from planar images to p4m.

    Output plane 4 m + r uses the base kernel turned r times, then row-flipped if m = 1.
    """

    group = "p4m"
    lifting = True


@keras.saving.register_keras_serializable(package="invariance_tf")
class P4MConvP4M(GroupConv2D):
    """p4m to p4m conv: the filter for output g at input h is g applied spatially to base[g^-1 h]."""

    group = "p4m"
    lifting = False


@keras.saving.register_keras_serializable(package="invariance_tf")
class GroupPool(keras.layers.Layer):
    """Max or mean over the group axis: C * |G| flat channels to C planar channels.

    The result is invariant to the group's action on the group axis, so its
    planar maps only rotate (and flip) with the input.
    """

    def __init__(self, group: str, mode: str = "max", **kwargs):
        super().__init__(**kwargs)
        if mode not in POOL_MODES:
            raise ValueError(f"Unknown group pool mode {mode!r}; valid modes are {list(POOL_MODES)}")
        self.group = group
        self.group_order = group_order(group)
        self.mode = mode

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        grouped = split_group(inputs, self.group_order)
        reduce = ops.max if self.mode == "max" else ops.mean
        return reduce(grouped, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "group": self.group, "mode": self.mode}


@keras.saving.register_keras_serializable(package="invariance_tf")
class GroupBatchNormalization(keras.layers.BatchNormalization):
    """Batch norm for G-feature maps: one mean, variance, gamma and beta per G-channel.

    Statistics are shared over batch, height, width and the group axis, which
    keeps the layer equivariant; plain BatchNormalization(axis=-1) on the flat
    channels would normalise each plane separately and break it. Takes the
    keyword arguments of `keras.layers.BatchNormalization` except `axis`.
    """

    def __init__(self, group: str, **kwargs):
        super().__init__(axis=3, **kwargs)
        self.group = group
        self.group_order = group_order(group)

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        if channels is None or channels % self.group_order:
            raise ValueError(
                f"GroupBatchNormalization needs input channels divisible by "
                f"{self.group_order}; got input shape {input_shape}"
            )
        super().build((*input_shape[:-1], channels // self.group_order, self.group_order))
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        grouped = split_group(inputs, self.group_order)
        return merge_group(super().call(grouped, training=training))

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("axis")
        return {**config, "group": self.group}

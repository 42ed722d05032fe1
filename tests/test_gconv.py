"""p4 / p4m G-convs and the G-ResNet against numpy references, exact group actions and the reference parameter counts.

Group actions on G-feature maps (flat channels c * |G| + g) are written out
here from their definition, not taken from the library: a spatial transform
of the NHWC maps plus a fixed permutation of the group axis, new plane t =
old plane perm[t] (gcnn-notes C.1-C.3).

Tolerances: rtol 1e-5 with atol = 1e-5 * max|reference| for single layers
and stacks (1e-4 for whole networks). The transformed and untransformed
paths sum the same float32 products in different orders, so each element
carries a rounding error proportional to the magnitude of its summands, i.e.
to the output scale, not to the element itself; elements that cancel to near
zero would fail a pure rtol test.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from invariance_tf import adversaries, networks
from invariance_tf.export import export_for_serving
from invariance_tf.layers import (
    GroupBatchNormalization,
    GroupPool,
    P4ConvP4,
    P4ConvZ2,
    P4MConvP4M,
    P4MConvZ2,
)
from invariance_tf.model import InvarianceModel
from invariance_tf.networks.g_resnet import g_resnet, planar_counterpart

ORDERS = {"z2": 1, "p4": 4, "p4m": 8}
SPATIAL = {
    "rot90": lambda x: tf.image.rot90(x, 1),
    "rot180": lambda x: tf.image.rot90(x, 2),
    "rot270": lambda x: tf.image.rot90(x, 3),
    "flip_up_down": tf.image.flip_up_down,
    "flip_left_right": tf.image.flip_left_right,
}
PERMUTATIONS = {
    "p4": {"rot90": [3, 0, 1, 2], "rot180": [2, 3, 0, 1], "rot270": [1, 2, 3, 0]},
    "p4m": {
        "rot90": [3, 0, 1, 2, 5, 6, 7, 4],
        "rot180": [2, 3, 0, 1, 6, 7, 4, 5],
        "rot270": [1, 2, 3, 0, 7, 4, 5, 6],
        "flip_up_down": [4, 5, 6, 7, 0, 1, 2, 3],
        "flip_left_right": [6, 7, 4, 5, 2, 3, 0, 1],
    },
}
GENERATORS = {"p4": ["rot90"], "p4m": ["rot90", "flip_up_down", "flip_left_right"]}
ROTATIONS = ["rot90", "rot180", "rot270"]
CONVS = {P4ConvZ2: ("z2", "p4"), P4ConvP4: ("p4", "p4"), P4MConvZ2: ("z2", "p4m"), P4MConvP4M: ("p4m", "p4m")}
# (strides, padding, side): exact cases, even sides only at stride 1.
GEOMETRIES = [(1, "same", 8), (1, "valid", 8), (2, "same", 9), (2, "valid", 9)]


def act(x, transform: str, group: str) -> np.ndarray:
    """The group action `transform` on NHWC maps over `group` ("z2" = planar maps)."""
    x = np.asarray(SPATIAL[transform](tf.constant(x)))
    if group == "z2":
        return x
    grouped = x.reshape(*x.shape[:-1], -1, ORDERS[group])
    return grouped[..., PERMUTATIONS[group][transform]].reshape(x.shape)


def assert_equivariant(f, x, in_group: str, out_group: str, transforms, rel: float = 1e-5):
    """f(T_in x) == T_out f(x) for every transform, to rtol `rel` and atol `rel` * output scale."""
    reference = np.asarray(f(x))
    atol = rel * np.abs(reference).max()
    for transform in transforms:
        np.testing.assert_allclose(
            np.asarray(f(act(x, transform, in_group))),
            act(reference, transform, out_group),
            rtol=rel,
            atol=atol,
            err_msg=transform,
        )


def randomize(weights, rng: np.random.Generator) -> None:
    """Random biases, BN gamma/beta and moving statistics: at init they would hide per-plane bugs."""
    for w in weights:
        if w.name == "kernel":
            continue
        if w.name == "moving_variance":
            value = rng.uniform(0.5, 2.0, w.shape)
        elif w.name == "gamma":
            value = rng.uniform(0.5, 1.5, w.shape)
        else:
            value = rng.normal(0.0, 1.0, w.shape)
        w.assign(value.astype(np.float32))


def built(layer, channels: int, rng: np.random.Generator):
    layer.build((None, None, None, channels))
    randomize(layer.weights, rng)
    return layer


# --- filter expansion -------------------------------------------------------------


def d4_action(element: int, plane: np.ndarray) -> np.ndarray:
    """Element t = 4 m + r of D4 on a kernel: r counter-clockwise quarter-turns, then a row flip if m = 1."""
    m, r = divmod(element, 4)
    turned = np.rot90(plane, r, axes=(0, 1))
    return turned[::-1] if m else turned


def d4_table_by_probe() -> tuple[np.ndarray, np.ndarray]:
    """Product table and inverses of D4 found by composing the actions on an asymmetric probe."""
    probe = np.arange(9).reshape(3, 3)
    images = [d4_action(t, probe) for t in range(8)]
    table = np.array(
        [
            [
                next(t for t in range(8) if np.array_equal(d4_action(a, d4_action(b, probe)), images[t]))
                for b in range(8)
            ]
            for a in range(8)
        ]
    )
    return table, np.argmax(table == 0, axis=1)


PROBE_TABLE, PROBE_INVERSE = d4_table_by_probe()


def numpy_bank(base: np.ndarray, in_group: str, out_group: str) -> np.ndarray:
    """Filter bank (k, k, Cin, |Gi|, Cout, |Go|) built with np.rot90 / np.roll / flips.

    Lifting: plane g is the base kernel under g. p4 -> p4: plane s is the base
    kernel with its input group axis rolled by +s, turned s times. p4m -> p4m:
    the filter for output g at input h is g applied to base[g^-1 h].
    """
    if in_group == "z2":
        base = base[:, :, :, None, :]
    planes = []
    for g in range(ORDERS[out_group]):
        if in_group == "z2":
            source = base
        elif out_group == "p4":
            source = np.roll(base, g, axis=3)
        else:
            source = base[:, :, :, PROBE_TABLE[PROBE_INVERSE[g]], :]
        planes.append(d4_action(g, source))
    return np.stack(planes, axis=-1)


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("conv", list(CONVS), ids=lambda c: c.__name__)
def test_filter_bank_equals_numpy_construction(conv, kernel_size):
    in_group, out_group = CONVS[conv]
    cin, cout, k = 2, 3, kernel_size
    layer = conv(cout, kernel_size)
    layer.build((None, None, None, cin * ORDERS[in_group]))
    bank = np.asarray(layer.expanded_kernel).reshape(k, k, cin, ORDERS[in_group], cout, ORDERS[out_group])
    np.testing.assert_array_equal(bank, numpy_bank(np.asarray(layer.kernel), in_group, out_group))


def test_output_is_conv_with_bank_plus_one_bias_per_g_channel():
    rng = np.random.default_rng(0)
    layer = built(P4MConvP4M(3, strides=2), 2 * 8, rng)
    x = rng.normal(size=(2, 9, 9, 16)).astype(np.float32)
    bank = numpy_bank(np.asarray(layer.kernel), "p4m", "p4m").reshape(3, 3, 16, 24)
    expected = tf.nn.conv2d(x, bank, 2, "SAME") + np.repeat(np.asarray(layer.bias), 8)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_gradients_reach_base_kernel():
    layer = P4ConvP4(3)
    x = tf.random.normal((1, 7, 7, 8), seed=1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    gradient = tape.gradient(loss, layer.kernel)
    assert gradient.shape == (3, 3, 2, 4, 3)
    assert np.all(np.asarray(gradient) != 0)


# --- equivariance ---------------------------------------------------------------------


@pytest.mark.parametrize("strides,padding,side", GEOMETRIES)
@pytest.mark.parametrize("conv", list(CONVS), ids=lambda c: c.__name__)
def test_conv_is_equivariant(conv, strides, padding, side):
    rng = np.random.default_rng(1)
    in_group, out_group = CONVS[conv]
    channels = 3 * ORDERS[in_group]
    layer = built(conv(4, strides=strides, padding=padding), channels, rng)
    x = rng.normal(size=(2, side, side, channels)).astype(np.float32)
    assert_equivariant(layer, x, in_group, out_group, GENERATORS[out_group])


def test_lifting_rolls_group_axis_forward():
    """Pins the convention: for p4, rotating the input makes new plane s the rotated old plane s - 1."""
    rng = np.random.default_rng(2)
    layer = built(P4ConvZ2(1), 1, rng)
    x = rng.normal(size=(1, 7, 7, 1)).astype(np.float32)
    turned = np.asarray(layer(np.rot90(x, 1, axes=(1, 2)).copy()))
    expected = np.rot90(np.roll(np.asarray(layer(x)), 1, axis=-1), 1, axes=(1, 2))
    np.testing.assert_allclose(turned, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_group_batch_norm_is_equivariant(group, training):
    rng = np.random.default_rng(3)
    layer = built(GroupBatchNormalization(group), 3 * ORDERS[group], rng)
    x = rng.normal(2.0, 3.0, size=(4, 6, 6, 3 * ORDERS[group])).astype(np.float32)
    assert_equivariant(lambda z: layer(z, training=training), x, group, group, GENERATORS[group])


def test_group_batch_norm_shares_statistics_over_group_axis():
    layer = GroupBatchNormalization("p4", center=False, scale=False, epsilon=0.0)
    x = np.random.default_rng(4).normal(size=(2, 3, 3, 8)).astype(np.float32)
    grouped = x.reshape(2, 3, 3, 2, 4)
    mean = grouped.mean(axis=(0, 1, 2, 4), keepdims=True)
    std = grouped.std(axis=(0, 1, 2, 4), keepdims=True)
    expected = ((grouped - mean) / std).reshape(x.shape)
    np.testing.assert_allclose(layer(x, training=True), expected, rtol=1e-4, atol=1e-5)
    assert layer.moving_mean.shape == (2,)


@pytest.mark.parametrize("mode", ["max", "mean"])
@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_group_pool_is_invariant_on_group_axis(group, mode):
    x = np.random.default_rng(5).normal(size=(2, 5, 5, 3 * ORDERS[group])).astype(np.float32)
    assert_equivariant(GroupPool(group, mode), x, group, "z2", GENERATORS[group])


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_stack_under_tf_function_is_equivariant(group, training):
    rng = np.random.default_rng(6)
    lifting, conv = (P4ConvZ2, P4ConvP4) if group == "p4" else (P4MConvZ2, P4MConvP4M)
    inputs = keras.Input((None, None, 3))
    x = lifting(4)(inputs)
    x = keras.layers.ReLU()(GroupBatchNormalization(group)(x))
    x = conv(5, strides=2)(x)
    x = keras.layers.ReLU()(GroupBatchNormalization(group)(x))
    x = conv(3, padding="valid")(x)
    model = keras.Model(inputs, x)
    randomize(model.weights, rng)
    run = tf.function(
        lambda z: model(z, training=training), input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)]
    )
    x = rng.normal(size=(3, 11, 11, 3)).astype(np.float32)
    assert_equivariant(run, x, "z2", group, GENERATORS[group])


# --- G-ResNet -------------------------------------------------------------------------


def tiny_g_resnet(group: str, rng: np.random.Generator) -> keras.Model:
    """Depth-8 G-ResNet with 4/6/8 G-channels, seeded kernels and random biases and BN statistics."""
    keras.utils.set_random_seed(int(rng.integers(2**31)))
    model = g_resnet(depth=8, group=group, input_shape=(None, None, 3), widths=(4, 6, 8))
    randomize(model.weights, rng)
    return model


def max_relative_change(model, x, transforms) -> float:
    """The largest `|logits(T x) - logits(x)| / max |logits(x)|` over `transforms`."""
    logits = np.asarray(model(x, training=False))
    return (
        max(np.abs(np.asarray(model(act(x, t, "z2"), training=False)) - logits).max() for t in transforms)
        / np.abs(logits).max()
    )


@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_g_resnet_logits_are_invariant_at_33(group):
    rng = np.random.default_rng(7)
    model = tiny_g_resnet(group, rng)
    x = rng.uniform(0, 255, size=(2, 33, 33, 3)).astype(np.float32)
    reference = np.asarray(model(x, training=False))
    for transform in ROTATIONS + GENERATORS[group][1:]:
        np.testing.assert_allclose(
            model(act(x, transform, "z2"), training=False),
            reference,
            rtol=1e-4,
            atol=1e-4 * np.abs(reference).max(),
            err_msg=transform,
        )


def test_g_resnet_is_only_approximately_invariant_at_32(cifar10_test_slice):
    """Even sides pad stride-2 'same' convs asymmetrically (gcnn-notes C.d); measures the deviation.

    Asserting it exceeds the exact-case tolerance shows the 33x33 test is
    sensitive to padding geometry, not vacuous.
    """
    rng = np.random.default_rng(8)
    model = tiny_g_resnet("p4", rng)
    images = cifar10_test_slice[0][:20].astype(np.float32)
    deviation = max_relative_change(model, images, ROTATIONS)
    exact = max_relative_change(model, np.pad(images, ((0, 0), (0, 1), (0, 1), (0, 0))), ROTATIONS)
    print(
        f"\nmax |logits(R^k x) - logits(x)| / max|logits|, depth-8 p4 G-ResNet, 20 CIFAR-10 images: "
        f"32x32 {deviation:.2e}, 33x33 {exact:.2e}"
    )
    assert exact < 1e-4
    assert deviation > 1e-3


def trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_parameter_counts_match_planar_resnet44():
    models = {
        "G-ResNet44 p4 (16/32/64)": g_resnet(44, "p4"),
        "G-ResNet44 p4m (11/23/45)": g_resnet(44, "p4m"),
        "planar ResNet44 (32/64/128)": planar_counterpart(44),
        "paper ResNet44 (16-16-32-64)": networks.build("resnet", n=7),
    }
    trainable = {name: trainable_count(model) for name, model in models.items()}
    print()
    for name, model in models.items():
        print(f"{name}: {trainable[name]:,} trainable, {model.count_params():,} with BN moving statistics")
    planar = trainable["planar ResNet44 (32/64/128)"]
    assert planar == 2_639_434  # reference recount (gcnn-notes B)
    # Reference recount 2,622,878 less its non-invariant head's 45*8*10 - 45*10 weights.
    assert trainable["G-ResNet44 p4m (11/23/45)"] == 2_622_878 - 3_150
    assert abs(trainable["G-ResNet44 p4 (16/32/64)"] / planar - 1) < 0.005


# --- serialisation and errors ----------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [
        P4ConvZ2(3, 5, strides=2, padding="valid"),
        P4MConvP4M(2, use_bias=False),
        GroupPool("p4m", "mean"),
        GroupBatchNormalization("p4", momentum=0.9),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_config_round_trip(layer):
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config


def test_keras_save_reload_and_export(tmp_path):
    rng = np.random.default_rng(9)
    model = tiny_g_resnet("p4m", rng)
    x = rng.uniform(0, 255, size=(2, 33, 33, 3)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(reloaded(x, training=False), expected)
    model.export(str(tmp_path / "exported"), verbose=False)
    exported = tf.saved_model.load(str(tmp_path / "exported"))
    served = exported.serve(x)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: GroupPool("c4"), "valid groups are"),
        (lambda: GroupPool("p4", "sum"), "valid modes are"),
        (lambda: P4ConvP4(2, padding="full"), "valid paddings are"),
        (lambda: P4MConvZ2(2, kernel_size=4), "must be odd"),
        (lambda: g_resnet(depth=45), "6n\\+2"),
        (lambda: g_resnet(group="so2"), "valid groups are"),
    ],
)
def test_invalid_arguments_name_valid_values(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_input_channels_must_fill_group_axis():
    with pytest.raises(ValueError, match="divisible by 8"):
        P4MConvP4M(2).build((None, 9, 9, 12))


def test_registered_as_g_resnet():
    assert networks.NETWORKS["g_resnet"] is g_resnet


def test_g_resnet_trains_inside_the_regularised_model_and_exports(tmp_path, cifar10_train_slice):
    images, labels = cifar10_train_slice
    x, y = images[:16].astype(np.float32), labels[:16]
    keras.utils.set_random_seed(0)
    model = InvarianceModel(
        g_resnet(depth=8, group="p4"),
        adversary=adversaries.WorstOfK(k=2, objective="kl"),
        ce_on="mix",
        h="kl",
        lambda_reg=1.0,
        seed=0,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    before = [w.numpy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1]) and history.history["reg"][-1] > 0
    assert all(np.abs(w.numpy() - b).max() > 0 for w, b in zip(model.trainable_weights, before))
    served = tf.saved_model.load(str(export_for_serving(model, tmp_path / "export"))).signatures["serving_default"]
    np.testing.assert_allclose(served(images=tf.constant(x))["logits"], model.predict(x, verbose=0), atol=1e-4)

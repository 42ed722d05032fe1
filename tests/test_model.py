"""The regularised model: its loss against a hand computation, saving, and distribution."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from invariance_tf import adversaries, networks, semimetrics, transforms
from invariance_tf.experiment_config import ExperimentConfig
from invariance_tf.layers import PerImageStandardization
from invariance_tf.model import InvarianceModel

WEIGHT_DECAY = 1e-3


def numpy_ce(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels]


def numpy_kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    return (np.exp(log_softmax(a)) * (log_softmax(a) - log_softmax(b))).sum(1)


@pytest.fixture(scope="module")
def batch(cifar10_train_slice):
    images, labels = cifar10_train_slice
    return images[:32].astype(np.float32), labels[:32]


@pytest.mark.parametrize("ce_on,h,lam", [("mix", "kl", 8.0), ("nat", "l2", 0.5), ("rob", "kl", 2.0)])
def test_train_step_loss_equals_hand_computation(batch, ce_on, h, lam):
    images, labels = batch
    keras.utils.set_random_seed(1)
    model = InvarianceModel(
        networks.build("small_cnn", weight_decay=WEIGHT_DECAY),
        adversary=adversaries.RandomTransform(),
        ce_on=ce_on,
        h=h,
        lambda_reg=lam,
        seed=5,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    seed = model._step_seed().numpy()
    weights = [w.numpy() for w in model.network.weights]
    params = transforms.sample_uniform(len(images), (3, 3, 30), seed)
    transformed = transforms.transform(images, params).numpy()
    nat = model.network(images).numpy()
    adv = model.network(transformed).numpy()
    ce = {
        "nat": numpy_ce(nat, labels).mean(),
        "rob": numpy_ce(adv, labels).mean(),
        "mix": (numpy_ce(nat, labels).mean() + numpy_ce(adv, labels).mean()) / 2,
    }[ce_on]
    reg = numpy_kl(nat, adv).mean() if h == "kl" else ((nat - adv) ** 2).sum(1).mean()
    decay = WEIGHT_DECAY / 2 * sum((w**2).sum() for w, v in zip(weights, model.network.weights) if "kernel" in v.path)
    logs = model.train_on_batch(images, labels, return_dict=True)
    np.testing.assert_allclose(logs["ce"], ce, rtol=1e-4)
    np.testing.assert_allclose(logs["reg"], reg, rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], ce + lam * reg + decay, rtol=1e-4)


class LogitAdversary(adversaries.Adversary):
    """Transformations that depend differentiably on the model's weights (tanh of its first logits)."""

    def __call__(self, model, images, labels, seed=None, logits_nat=None):
        return tf.tanh(model(images)[:, :3]) * tf.constant(self.limits, tf.float32)


@pytest.mark.parametrize(
    "adversary",
    [adversaries.SPGD(steps=2, objective="kl", random_start=False), LogitAdversary()],
    ids=["spgd", "differentiable_in_the_weights"],
)
def test_update_treats_the_adversarys_choice_as_a_constant(batch, adversary):
    """The step's update equals plain SGD on the loss with x~ precomputed and held fixed.

    This holds even for an adversary whose choice the weights' gradient could flow through.
    """
    images, labels = batch
    keras.utils.set_random_seed(2)
    model = InvarianceModel(
        networks.build("small_cnn", weight_decay=WEIGHT_DECAY), adversary=adversary, ce_on="mix", h="kl", lambda_reg=4.0
    )
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    fixed = tf.constant(transforms.transform(images, adversary(model.network, images, labels)))
    variables = model.network.trainable_variables
    with tf.GradientTape() as tape:
        nat, adv = model.network(images), model.network(fixed)
        ce = (
            tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, nat, from_logits=True))
            + tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, adv, from_logits=True))
        ) / 2
        loss = ce + 4.0 * tf.reduce_mean(semimetrics.kl(nat, adv)) + tf.add_n(model.network.losses)
    expected = [v.numpy() - 0.5 * g.numpy() for v, g in zip(variables, tape.gradient(loss, variables))]
    logs = model.train_on_batch(images, labels, return_dict=True)
    np.testing.assert_allclose(logs["loss"], loss.numpy(), rtol=1e-5)
    for got, want in zip(variables, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)


def worst_of_4_by_ce(model: InvarianceModel, images, labels) -> np.ndarray:
    """Per image, the worst w.r.t. CE of the 4 candidates the model's next step draws, computed in numpy."""
    seed = model._step_seed().numpy()
    candidates = transforms.sample_uniform(4 * len(images), (3, 3, 30), seed).numpy().reshape(4, len(images), 3)
    ce_per_candidate = np.stack(
        [numpy_ce(model.network(transforms.transform(images, c)).numpy(), labels) for c in candidates]
    )
    return candidates[ce_per_candidate.argmax(0), np.arange(len(images))]


def test_rob_with_lambda_0_is_ce_on_the_chosen_transformations_only(batch):
    """The D.A./A.T. rows' branch: loss = CE(f(x~), y) + decay, x~ the worst of k w.r.t. CE."""
    images, labels = batch
    keras.utils.set_random_seed(4)
    model = InvarianceModel(
        networks.build("small_cnn", weight_decay=WEIGHT_DECAY),
        adversary=adversaries.WorstOfK(k=4),
        ce_on="rob",
        lambda_reg=0.0,
        seed=9,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    chosen = worst_of_4_by_ce(model, images, labels)
    adv = model.network(transforms.transform(images, chosen)).numpy()
    decay = WEIGHT_DECAY / 2 * sum((v.numpy() ** 2).sum() for v in model.network.weights if "kernel" in v.path)
    logs = model.train_on_batch(images, labels, return_dict=True)
    assert "acc_nat" not in logs and logs["reg"] == 0.0
    np.testing.assert_allclose(logs["ce"], numpy_ce(adv, labels).mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], numpy_ce(adv, labels).mean() + decay, rtol=1e-5)


@pytest.mark.parametrize("ce_on, shared", [("mix", False), ("rob", False), ("mix", True)])
def test_ce_adversary_objective_ce_gives_the_ce_term_its_own_worst_case(batch, ce_on, shared):
    """The reference's A.T.+KL: h on (x, worst of k w.r.t. KL), the CE term on the worst of k w.r.t. CE.

    The CE term is also on x for mix. The searches take k draws of their own (the step's seed split in two), or
    with shared candidates the same k.
    """
    images, labels = batch
    keras.utils.set_random_seed(6)
    model = InvarianceModel(
        networks.build("small_cnn", weight_decay=WEIGHT_DECAY),
        adversary=adversaries.WorstOfK(k=4, objective="kl", shared_candidates=shared),
        ce_on=ce_on,
        h="kl",
        lambda_reg=3.0,
        seed=11,
        ce_adversary_objective="ce",
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    seed = model._step_seed()
    seeds = [seed, seed] if shared else list(transforms.split_seed(seed, 2))
    draws = [
        transforms.sample_uniform(4 * len(images), (3, 3, 30), s).numpy().reshape(4, len(images), 3) for s in seeds
    ]
    nat = model.network(images).numpy()
    logits = [[model.network(transforms.transform(images, c)).numpy() for c in candidates] for candidates in draws]
    rows = np.arange(len(images))
    by_kl = np.stack([numpy_kl(nat, z) for z in logits[0]]).argmax(0)
    by_ce = np.stack([numpy_ce(z, labels) for z in logits[1]]).argmax(0)
    assert np.any(by_kl != by_ce)
    adv_kl = model.network(transforms.transform(images, draws[0][by_kl, rows])).numpy()
    adv_ce = model.network(transforms.transform(images, draws[1][by_ce, rows])).numpy()
    ce = numpy_ce(adv_ce, labels).mean()
    if ce_on == "mix":
        ce = (numpy_ce(nat, labels).mean() + ce) / 2
    logs = model.train_on_batch(images, labels, return_dict=True)
    np.testing.assert_allclose(logs["ce"], ce, rtol=1e-4)
    np.testing.assert_allclose(logs["reg"], numpy_kl(nat, adv_kl).mean(), rtol=1e-4)


def test_reference_half_batch_ce_is_the_ce_of_the_second_half_of_the_worst_cases(batch):
    """The reference A.T. config's quirk: CE on the second half of the transformed batch only."""
    images, labels = batch
    keras.utils.set_random_seed(4)
    model = InvarianceModel(
        networks.build("small_cnn"),
        adversary=adversaries.WorstOfK(k=4),
        ce_on="rob",
        seed=9,
        reference_half_batch_ce=True,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    chosen = worst_of_4_by_ce(model, images, labels)
    per_example = numpy_ce(model.network(transforms.transform(images, chosen)).numpy(), labels)
    half = len(images) // 2
    logs = model.train_on_batch(images, labels, return_dict=True)
    np.testing.assert_allclose(logs["ce"], per_example[half:].mean(), rtol=1e-5)
    assert abs(per_example[half:].mean() - per_example.mean()) > 1e-3
    assert InvarianceModel.from_config(model.get_config()).reference_half_batch_ce


def test_ce_adversary_objective_ce_without_a_penalty_is_a_t(batch):
    """lambda_reg=0: no x~ for h is needed, so the one x~ is the worst w.r.t. CE (A.T.), as with objective ce."""
    images, labels = batch
    losses = []
    for objective, ce_adversary_objective in (("kl", "ce"), ("ce", "same")):
        keras.utils.set_random_seed(7)
        model = InvarianceModel(
            networks.build("small_cnn", weight_decay=WEIGHT_DECAY),
            adversary=adversaries.WorstOfK(k=4, objective=objective),
            ce_on="rob",
            seed=12,
            ce_adversary_objective=ce_adversary_objective,
        )
        model.compile(optimizer=keras.optimizers.SGD(0.01))
        losses.append(model.train_on_batch(images, labels, return_dict=True)["loss"])
    assert losses[0] == losses[1]


def test_ce_adversary_objective_ce_with_an_adversary_that_does_not_search_keeps_one_x_tilde(batch):
    """Worst-of-1 is one random draw whatever the objective: the step is the two-fold one (x, x~)."""
    images, labels = batch
    losses = []
    for ce_adversary_objective in ("ce", "same"):
        keras.utils.set_random_seed(8)
        model = InvarianceModel(
            networks.build("small_cnn", weight_decay=WEIGHT_DECAY),
            adversary=adversaries.WorstOfK(k=1, objective="kl"),
            ce_on="mix",
            lambda_reg=2.0,
            seed=13,
            ce_adversary_objective=ce_adversary_objective,
        )
        assert model._objectives() == ["kl"]
        model.compile(optimizer=keras.optimizers.SGD(0.01))
        losses.append(model.train_on_batch(images, labels, return_dict=True)["loss"])
    assert losses[0] == losses[1]


def one_sgd_update(batch, policy: str) -> tuple[InvarianceModel, list[np.ndarray], dict]:
    """A model built under `policy`, its weights' change after one step, and the step's logs."""
    images, labels = batch
    with networks.dtype_policy(policy):
        keras.utils.set_random_seed(6)
        model = InvarianceModel(
            networks.build("small_cnn"),
            adversary=adversaries.RandomTransform(),
            ce_on="mix",
            h="kl",
            lambda_reg=1.0,
            seed=1,
        )
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [v.numpy() for v in model.network.trainable_variables]
    logs = model.train_on_batch(images, labels, return_dict=True)
    return model, [v.numpy() - b for v, b in zip(model.network.trainable_variables, before)], logs


def test_dtype_policy_is_restored_even_after_an_error():
    with pytest.raises(RuntimeError), networks.dtype_policy("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        raise RuntimeError
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_step_matches_float32(batch, policy):
    _, reference, reference_logs = one_sgd_update(batch, "float32")
    model, update, logs = one_sgd_update(batch, policy)
    assert model.network.layers[2].compute_dtype == policy.split("_")[1]
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    np.testing.assert_allclose(logs["loss"], reference_logs["loss"], rtol=0.05)
    norm = np.sqrt(sum((u**2).sum() for u in update))
    reference_norm = np.sqrt(sum((u**2).sum() for u in reference))
    assert norm == pytest.approx(reference_norm, rel=0.1)


def test_mixed_precision_model_passes_raw_pixels_unrounded(batch):
    """Under mixed_bfloat16 the wrapper gives the network the pixels as they are, from a tensor or a NumPy array.

    Transformed pixels are not integers. The network's own float32 standardisation runs before any bfloat16 layer.
    """
    images, _ = batch
    with networks.dtype_policy("mixed_bfloat16"):
        keras.utils.set_random_seed(3)
        model = InvarianceModel(
            networks.build("resnet9", width=4), adversary=adversaries.RandomTransform(), ce_on="mix", lambda_reg=1.0
        )
        flatten = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(dtype="float32")])
        pixels_out = InvarianceModel(flatten)
    pixels = images[:8] + 0.3
    expected = tf.cast(model.network(tf.constant(pixels)), tf.float32).numpy()
    for inputs in (tf.constant(pixels), pixels):
        np.testing.assert_array_equal(model(inputs).numpy(), expected)
    pixels[0, 0, 0, 0] = 200.3
    assert pixels_out(pixels).numpy()[0, 0] == np.float32(200.3)


def test_calling_the_model_on_numpy_matches_a_tensor_and_predict(batch):
    images, _ = batch
    keras.utils.set_random_seed(3)
    model = InvarianceModel(networks.build("small_cnn"), adversary=adversaries.RandomTransform(), ce_on="rob")
    x = images[:8]
    expected = model(tf.constant(x)).numpy()
    for inputs in (x, x.astype(np.uint8), x.tolist()):
        np.testing.assert_array_equal(model(inputs).numpy(), expected)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("small_cnn", {}),
        ("resnet", {"n": 1}),
        ("resnet9", {"width": 4}),
        ("g_resnet", {"depth": 8, "widths": (2, 2, 2)}),
    ],
)
def test_every_network_standardises_raw_pixels_in_float32_under_mixed_precision(batch, name, kwargs):
    """Pixels off the integer grid (transformed images) reach the standardisation unrounded.

    The logits come out as float32, as Keras' mixed-precision guide asks of a model's outputs.
    """
    images, _ = batch
    with networks.dtype_policy("mixed_bfloat16"):
        network = networks.build(name, **kwargs)
    standardize = next(layer for layer in network.layers if isinstance(layer, PerImageStandardization))
    pixels = images[:4].astype(np.float64) + 0.3
    flat = pixels.reshape(len(pixels), -1)
    scale = np.maximum(flat.std(axis=1), 1 / np.sqrt(flat.shape[1]))
    expected = (flat - flat.mean(axis=1, keepdims=True)) / scale[:, None]
    standardized = keras.Model(network.input, standardize.output)(pixels.astype(np.float32))
    np.testing.assert_allclose(np.reshape(standardized, flat.shape), expected, atol=1e-4)
    assert network(pixels.astype(np.float32)).dtype == "float32"


def test_sample_weights_and_compiled_losses_are_refused(batch):
    images, labels = batch
    model = InvarianceModel(networks.build("small_cnn"), adversary=adversaries.RandomTransform(), ce_on="mix")
    with pytest.raises(ValueError, match=r"computes its own loss.*'loss': 'mse'"):
        model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"computes its own loss.*'metrics': \['accuracy'\]"):
        model.compile(optimizer="sgd", metrics=["accuracy"])
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="does not support sample weights"):
        model.fit(images, labels, sample_weight=np.ones(len(labels)), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="does not support sample weights"):
        model.fit(images, labels, class_weight={c: 1.0 for c in range(10)}, epochs=1, verbose=0)


def test_jit_compile_is_accepted_with_an_adversary_and_auto_resolves_as_keras_does():
    model = InvarianceModel(networks.build("small_cnn"), adversary=adversaries.WorstOfK(k=2), ce_on="rob")
    model.compile(optimizer="sgd", jit_compile=True)
    assert model.jit_compile
    model.compile(optimizer="sgd")
    assert model.jit_compile is bool(tf.config.list_physical_devices("GPU"))


def test_the_model_and_its_flags_state_one_rule_in_their_own_names():
    with pytest.raises(ValueError) as library:
        InvarianceModel(networks.build("small_cnn"), adversary=adversaries.WorstOfK(k=2), ce_on="rob", lambda_reg=-1.0)
    with pytest.raises(ValueError) as command_line:
        ExperimentConfig(adversary="worst_of_k", ce_on="rob", lambda_reg=-1.0).validate()
    assert str(library.value) == "lambda_reg=-1.0 is invalid: must be >= 0"
    assert str(command_line.value) == "--lambda_reg=-1.0 is invalid: must be >= 0"


def test_multi_worker_workaround_overrides_a_hook_keras_still_calls(batch):
    """keras-team/keras#20585: fit must still call the private `_maybe_symbolic_build` the mixin overrides."""
    images, labels = batch
    assert "_maybe_symbolic_build" in vars(keras.src.backend.tensorflow.trainer.TensorFlowTrainer)
    calls = []

    class Counting(InvarianceModel):
        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            calls.append(True)
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    model = Counting(networks.build("small_cnn"))
    model.compile(optimizer="sgd")
    model.fit(images, labels, epochs=1, verbose=0)
    assert calls and model.optimizer.built


def test_fit_evaluate_save_and_reload(tmp_path, batch):
    images, labels = batch
    model = InvarianceModel(
        networks.build("resnet", n=1),
        adversary=adversaries.WorstOfK(k=3, objective="l2"),
        ce_on="mix",
        h="l2",
        lambda_reg=1.0,
        seed=3,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    history = model.fit(images, labels, batch_size=16, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    clean = model.evaluate(images, labels, verbose=0, return_dict=True)
    assert set(clean) == {"ce", "acc_nat"}
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(reloaded, InvarianceModel)
    assert adversaries.serialize(reloaded.adversary) == adversaries.serialize(model.adversary)
    assert (reloaded.ce_on, reloaded.h, reloaded.lambda_reg) == ("mix", "l2", 1.0)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_a_model_without_seed_records_the_seed_it_drew():
    model = InvarianceModel(networks.build("small_cnn"), adversary=adversaries.RandomTransform(), ce_on="rob")
    rebuilt = InvarianceModel.from_config(model.get_config())
    assert isinstance(model.get_config()["seed"], int) and rebuilt._draw_seed == model._draw_seed


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(ce_on="both"), r"^ce_on='both' is invalid: valid values are \['nat', 'rob', 'mix'\]$"),
        (
            dict(lambda_reg=-1.0, adversary=adversaries.RandomTransform()),
            r"^lambda_reg=-1.0 is invalid: must be >= 0$",
        ),
        (dict(label_smoothing=1.0), r"^label_smoothing=1.0 is invalid: must be in \[0, 1\)$"),
        (dict(ce_on="rob"), r"^adversary=None cannot give x~ for ce_on='rob' lambda_reg=0.0: "),
        (dict(h="js"), r"^h='js' is invalid: valid semimetrics are \['kl', 'l2'\]$"),
        (dict(ce_adversary_objective="kl"), r"^ce_adversary_objective='kl' is invalid: .*\['same', 'ce'\]$"),
        (
            dict(adversary=adversaries.WorstOfK(k=2), ce_on="nat", lambda_reg=0.0),
            r"^adversary='worst_of_k' is never used with ce_on='nat' lambda_reg=0: use adversary=None ",
        ),
        (
            dict(adversary=adversaries.WorstOfK(k=2), ce_on="mix", lambda_reg=1.0, reference_half_batch_ce=True),
            r"^reference_half_batch_ce=True needs ce_on='rob' .*; got ce_on='mix'$",
        ),
    ],
)
def test_bad_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InvarianceModel(networks.build("small_cnn"), **kwargs)


MIRRORED_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from invariance_tf import adversaries, data, networks
    from invariance_tf.model import InvarianceModel

    images, labels, _ = data.read_image_folder(sys.argv[1], "train", per_class=4)
    images = images[:32].astype("float32"); labels = labels[:32]

    def train(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = InvarianceModel(networks.build("small_cnn", weight_decay=1e-3), ce_on="mix", h="kl",
                                    lambda_reg=2.0,
                                    adversary=adversaries.SPGD(steps=2, random_start=False))
            model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        initial = [w.numpy() for w in model.network.weights]
        ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
        model.fit(ds, epochs=1, verbose=0)
        return [w.numpy() for w in model.network.weights], initial

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    (single, initial), (multi, _) = train(tf.distribute.get_strategy()), train(mirrored)
    print("CHANGE", max(np.abs(a - b).max() for a, b in zip(single, initial)))
    print("MAXDIFF", max(np.abs(a - b).max() for a, b in zip(single, multi)))

    def step_seeds(strategy):
        with strategy.scope():
            model = InvarianceModel(networks.build("small_cnn"), adversary=adversaries.WorstOfK(k=2), ce_on="rob",
                                    seed=7)
            model.compile(optimizer=keras.optimizers.SGD(0.05))
        return [s.numpy().tolist() for s in strategy.experimental_local_results(strategy.run(model._step_seed))]
    print("SEEDS", *step_seeds(tf.distribute.get_strategy()), *step_seeds(mirrored), sep="|")
""")


def test_mirrored_strategy_matches_single_device(cifar10_dir):
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(cifar10_dir)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    change = float(result.stdout.split("CHANGE")[1].split()[0])
    diff = float(result.stdout.split("MAXDIFF")[1].split()[0])
    assert change > 1e-3 and diff < 1e-4, (change, diff)
    single, *replicas = result.stdout.split("SEEDS|")[1].strip().split("|")
    assert single == "[7, 0]" and len(replicas) == 2 and replicas[0] != replicas[1], result.stdout

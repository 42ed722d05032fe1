"""The regularised model: its loss against a hand computation, saving, and distribution."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from invariance_tf import adversaries, networks, transforms
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
    model = InvarianceModel(networks.build("small_cnn", weight_decay=WEIGHT_DECAY),
                            adversary=adversaries.RandomTransform(), ce_on=ce_on, h=h, lambda_reg=lam, seed=5)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    seed = model._seed_generator.state.numpy().copy()
    weights = [w.numpy() for w in model.network.weights]
    params = transforms.sample_uniform(len(images), (3, 3, 30), seed)
    transformed = transforms.transform(images, params).numpy()
    nat = model.network(images).numpy()
    adv = model.network(transformed).numpy()
    ce = {"nat": numpy_ce(nat, labels).mean(), "rob": numpy_ce(adv, labels).mean(),
          "mix": (numpy_ce(nat, labels).mean() + numpy_ce(adv, labels).mean()) / 2}[ce_on]
    reg = numpy_kl(nat, adv).mean() if h == "kl" else ((nat - adv) ** 2).sum(1).mean()
    decay = WEIGHT_DECAY / 2 * sum((w ** 2).sum() for w, v in zip(weights, model.network.weights)
                                   if "kernel" in v.path)
    logs = model.train_on_batch(images, labels, return_dict=True)
    np.testing.assert_allclose(logs["ce"], ce, rtol=1e-4)
    np.testing.assert_allclose(logs["reg"], reg, rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], ce + lam * reg + decay, rtol=1e-4)


def test_no_gradient_flows_through_the_adversary(batch):
    images, labels = batch
    model = InvarianceModel(networks.build("small_cnn"), adversary=adversaries.SPGD(steps=2),
                            ce_on="mix", lambda_reg=1.0)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    before = [w.numpy() for w in model.network.trainable_weights]
    logs = model.train_on_batch(images, labels, return_dict=True)
    assert np.isfinite(logs["loss"]) and {"acc_nat", "acc_adv", "reg", "ce"} <= set(logs)
    assert any(np.abs(w.numpy() - b).max() > 0 for w, b in zip(model.network.trainable_weights, before))


def test_fit_evaluate_save_and_reload(tmp_path, batch):
    images, labels = batch
    model = InvarianceModel(networks.build("resnet", n=1), adversary=adversaries.WorstOfK(k=3, objective="l2"),
                            ce_on="mix", h="l2", lambda_reg=1.0, seed=3)
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


@pytest.mark.parametrize("kwargs,message", [
    (dict(ce_on="both"), r"'both'.*\['nat', 'rob', 'mix'\]"),
    (dict(lambda_reg=-1.0, adversary=adversaries.RandomTransform()), "lambda_reg must be >= 0; got -1.0"),
    (dict(ce_on="rob"), "needs an adversary"),
    (dict(h="js"), r"'js'.*\['kl', 'l2'\]"),
])
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
            model = InvarianceModel(networks.build("small_cnn"), ce_on="mix", h="kl", lambda_reg=2.0,
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
""")


def test_mirrored_strategy_matches_single_device(cifar10_dir):
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(cifar10_dir)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    change = float(result.stdout.split("CHANGE")[1].split()[0])
    diff = float(result.stdout.split("MAXDIFF")[1])
    assert change > 1e-3 and diff < 1e-4, (change, diff)

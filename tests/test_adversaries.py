"""Adversaries: exact properties of worst-of-k and S-PGD on a real model and real images."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from invariance_tf import adversaries, networks, transforms
from invariance_tf.experiment_config import ExperimentConfig

SEED = tf.constant([3, 14], tf.int64)


@pytest.fixture(scope="module")
def model():
    tf.keras.utils.set_random_seed(0)
    return networks.build("small_cnn")


@pytest.fixture(scope="module")
def batch(cifar10_test_slice):
    images, labels = cifar10_test_slice
    return tf.constant(images[:32], tf.float32), tf.constant(labels[:32])


def objective(name, model, images, labels, params):
    fn = adversaries.objective_fn(name)
    return fn(model(transforms.transform(images, params)), labels, model(images)).numpy()


@pytest.mark.parametrize("name", ["ce", "kl", "l2"])
def test_worst_of_k_beats_its_first_candidate(model, batch, name):
    images, labels = batch
    k = 6
    chosen = adversaries.WorstOfK(k=k, objective=name)(model, images, labels, seed=SEED)
    candidates = tf.reshape(transforms.sample_uniform(k * 32, (3, 3, 30), SEED), [k, 32, 3])
    values = np.stack([objective(name, model, images, labels, c) for c in candidates])
    best = objective(name, model, images, labels, chosen)
    assert np.all(best >= values[0] - 1e-5)
    np.testing.assert_allclose(best, values.max(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("max_batch", [None, 64])
def test_worst_of_k_choose_searches_each_objective_with_its_own_draws(model, batch, max_batch):
    """The reference's two worst-of-k searches: each objective's choice is what a search for it alone gives.

    Each search has its own seed split from the step's, so the two never share candidates.
    """
    images, labels = batch
    both = adversaries.WorstOfK(k=5, objective="kl", max_batch=max_batch).choose(
        model, images, labels, ["kl", "ce"], seed=SEED
    )
    seeds = transforms.split_seed(SEED, 2)
    for name, chosen, seed in zip(["kl", "ce"], both, seeds):
        alone = adversaries.WorstOfK(k=5, objective=name)(model, images, labels, seed=seed)
        np.testing.assert_array_equal(chosen, alone)
    shared = adversaries.WorstOfK(k=5, objective="kl").sample_candidates(32, SEED).numpy()
    assert not np.any(np.all(np.isclose(both[1].numpy()[None], shared), axis=-1))


@pytest.mark.parametrize("max_batch", [None, 64])
def test_worst_of_k_shared_candidates_picks_each_objectives_best_of_the_same_candidates(model, batch, max_batch):
    """One search for CE and KL gives, per objective, what a search for that objective alone gives."""
    images, labels = batch
    both = adversaries.WorstOfK(k=5, objective="kl", max_batch=max_batch, shared_candidates=True).choose(
        model, images, labels, ["kl", "ce"], seed=SEED
    )
    for name, chosen in zip(["kl", "ce"], both):
        alone = adversaries.WorstOfK(k=5, objective=name)(model, images, labels, seed=SEED)
        np.testing.assert_array_equal(chosen, alone)
    assert not np.array_equal(both[0], both[1])


def test_spgd_choose_searches_each_objective_with_its_own_draws(model, batch):
    images, labels = batch
    spgd = adversaries.SPGD(steps=2, objective="kl")
    kl, ce = spgd.choose(model, images, labels, ["kl", "ce"], seed=SEED)
    seeds = transforms.split_seed(SEED, 2)
    np.testing.assert_array_equal(kl, spgd(model, images, labels, seed=seeds[0]))
    np.testing.assert_array_equal(ce, adversaries.SPGD(steps=2, objective="ce")(model, images, labels, seed=seeds[1]))
    np.testing.assert_array_equal(
        spgd.choose(model, images, labels, ["kl"], seed=SEED)[0], spgd(model, images, labels, seed=SEED)
    )


def test_worst_of_k_with_k_1_is_random(model, batch):
    images, labels = batch
    random = adversaries.RandomTransform()(model, images, labels, seed=SEED)
    worst_of_1 = adversaries.WorstOfK(k=1)(model, images, labels, seed=SEED)
    np.testing.assert_array_equal(random, worst_of_1)


def test_worst_of_k_chunked_model_calls_give_the_same_choice(model, batch):
    images, labels = batch
    whole = adversaries.WorstOfK(k=5)(model, images, labels, seed=SEED)
    chunked = adversaries.WorstOfK(k=5, max_batch=64)(model, images, labels, seed=SEED)
    np.testing.assert_array_equal(whole, chunked)


def test_worst_of_k_bounds_model_calls_when_the_batch_size_is_traced_as_unknown(model, batch):
    images, labels = batch
    calls = []

    def counting_model(x, training=False):
        calls.append(x.shape[0])
        return model(x, training=training)

    choose = tf.function(
        lambda x, y: adversaries.WorstOfK(k=5, max_batch=64)(counting_model, x, y, seed=SEED),
        input_signature=[tf.TensorSpec([None, 32, 32, 3]), tf.TensorSpec([None], tf.int64)],
    )
    chosen = choose(images, labels)
    assert len(calls) == 5
    np.testing.assert_array_equal(chosen, adversaries.WorstOfK(k=5)(model, images, labels, seed=SEED))


@pytest.mark.parametrize("name,random_start", [("ce", True), ("kl", False), ("l2", True)])
def test_spgd_improves_on_its_start_and_stays_in_limits(model, batch, name, random_start):
    images, labels = batch
    limits = (2.0, 3.0, 20.0)
    attack = adversaries.SPGD(steps=4, objective=name, limits=limits, random_start=random_start)
    params = attack(model, images, labels, seed=SEED).numpy()
    start = tf.zeros([32, 3])
    if random_start:
        start = transforms.sample_uniform(32, limits, transforms.split_seed(SEED, 1)[0])
    assert np.all(np.abs(params) <= np.array(limits) + 1e-6)
    final, initial = (objective(name, model, images, labels, p) for p in (params, start))
    assert np.all(final >= initial - 1e-4)
    assert final.mean() > initial.mean()


def test_spgd_restarts_are_at_least_as_strong(model, batch):
    images, labels = batch
    one = adversaries.SPGD(steps=3, restarts=1)(model, images, labels, seed=SEED)
    three = adversaries.SPGD(steps=3, restarts=3)(model, images, labels, seed=SEED)
    assert np.all(objective("ce", model, images, labels, three) >= objective("ce", model, images, labels, one) - 1e-4)


def test_adversaries_run_inside_tf_function(model, batch):
    images, labels = batch
    attack = adversaries.SPGD(steps=2)
    params = tf.function(lambda x, y: attack(model, x, y, seed=SEED))(images, labels)
    eager = attack(model, images, labels, seed=SEED)
    np.testing.assert_allclose(params, eager, atol=1e-5)


def test_serialize_round_trip():
    attack = adversaries.WorstOfK(k=7, objective="kl", limits=(1, 2, 3), shared_candidates=True, resampling="reference")
    rebuilt = adversaries.deserialize(adversaries.serialize(attack))
    assert isinstance(rebuilt, adversaries.WorstOfK) and rebuilt.get_config() == attack.get_config()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(name="fgsm"), r"'fgsm'.*\['random', 'spgd', 'worst_of_k'\]"),
        (dict(name="worst_of_k", k=0), r"^k=0 is invalid: must be >= 1$"),
        (dict(name="worst_of_k", max_batch=0), r"^max_batch=0 is invalid: must be >= 1 or None$"),
        (
            dict(name="worst_of_k", objective="js"),
            r"^objective='js' is invalid: valid objectives are \['ce', 'kl', 'l2'\]$",
        ),
        (dict(name="spgd", steps=0), r"^steps=0 is invalid: must be >= 1$"),
        (dict(name="spgd", restarts=0), r"^restarts=0 is invalid: must be >= 1$"),
        (dict(name="spgd", step_size=(1, -1, 1)), r"^step_size=\(1, -1, 1\) is invalid: must be None or 3 values >= 0"),
        (
            dict(name="random", resampling="nearest"),
            r"^resampling='nearest' is invalid: valid resamplings are \['composed', 'reference'\]$",
        ),
        (dict(name="spgd", restarts=3, random_start=False), "^restarts=3 need random_start=True: "),
        (dict(name="random", limits=(3, 3, -1)), r"^limits=\(3, 3, -1\) is invalid: must be 3 values >= 0: dx pixels"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        adversaries.get(**kwargs)


@pytest.mark.parametrize(
    "kwargs,flags,named",
    [
        (dict(name="worst_of_k", k=0), dict(adversary="worst_of_k", k=0), ("k=0", "--k=0")),
        (dict(name="spgd", steps=0), dict(adversary="spgd", spgd_steps=0), ("steps=0", "--spgd_steps=0")),
        (
            dict(name="spgd", objective="js"),
            dict(adversary="spgd", adversary_objective="js"),
            ("objective='js'", "--adversary_objective=js"),
        ),
        (
            dict(name="random", limits=(3.0, -1.0, 30.0)),
            dict(adversary="random", limits=(3.0, -1.0, 30.0)),
            ("limits=(3.0, -1.0, 30.0)", "--limits=3,-1,30"),
        ),
        (
            dict(name="random", resampling="nearest"),
            dict(adversary="random", resampling="nearest"),
            ("resampling='nearest'", "--resampling=nearest"),
        ),
    ],
)
def test_the_adversaries_and_their_flags_state_one_rule_in_their_own_names(kwargs, flags, named):
    with pytest.raises(ValueError) as library:
        adversaries.get(**kwargs)
    with pytest.raises(ValueError) as command_line:
        ExperimentConfig(ce_on="rob", **flags).validate()
    library_name, flag = named
    assert str(library.value).startswith(f"{library_name} is invalid: ")
    assert str(command_line.value) == str(library.value).replace(library_name, flag, 1)


def test_a_custom_adversary_takes_the_rules_on_limits_and_resampling():
    class Custom(adversaries.Adversary):
        pass

    assert Custom(limits=(1, 2, 3)).get_config() == {"limits": [1.0, 2.0, 3.0], "resampling": "composed"}
    with pytest.raises(ValueError, match=r"^resampling='nearest' is invalid: "):
        Custom(resampling="nearest")


def test_only_a_search_uses_its_objective():
    """Two objectives need two x~ only when the choice depends on the objective (worst-of-1 is a random draw)."""
    assert adversaries.WorstOfK(k=10).uses_objective and adversaries.SPGD().uses_objective
    assert not adversaries.WorstOfK(k=1).uses_objective and not adversaries.RandomTransform().uses_objective

"""The regularised Keras model: invariance-inducing training of any classifier network."""

from __future__ import annotations

import keras
import tensorflow as tf

from invariance_tf import adversaries, semimetrics, transforms

CE_ON = ("nat", "rob", "mix")


def _mean_ce(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))


@keras.saving.register_keras_serializable(package="invariance_tf")
class InvarianceModel(keras.Model):
    """Trains `network` with `loss = CE term + lambda_reg * mean h(f(x), f(x~)) + weight decay`.

    x~ is chosen per example by `adversary` (random, worst-of-k or S-PGD; no
    gradient flows through the choice). The CE term is on the natural batch
    (`ce_on="nat"`), the transformed batch (`"rob"`) or both (`"mix"`, the mean
    over the 2B examples). Natural and transformed images go through the
    network in one forward pass. Weight decay is the network's own
    regularisation losses. With `adversary=None` it is standard training.

    Args:
        network: a Keras model mapping raw images [B, H, W, C] to logits.
        adversary: an `adversaries.Adversary`, its `adversaries.serialize` dict, or None.
        ce_on: "nat", "rob" or "mix".
        h: semimetric name, "kl" or "l2".
        lambda_reg: weight of the invariance penalty, >= 0.
        seed: seed of the adversary's random draws.
    """

    def __init__(self, network: keras.Model, adversary: adversaries.Adversary | dict | None = None,
                 ce_on: str = "nat", h: str = "kl", lambda_reg: float = 0.0, seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(adversary, dict):
            adversary = adversaries.deserialize(adversary)
        if ce_on not in CE_ON:
            raise ValueError(f"Unknown ce_on={ce_on!r}; valid values are {list(CE_ON)}")
        if not lambda_reg >= 0:
            raise ValueError(f"lambda_reg must be >= 0; got {lambda_reg}")
        if adversary is None and (ce_on != "nat" or lambda_reg > 0):
            raise ValueError(f"ce_on={ce_on!r} with lambda_reg={lambda_reg} needs an adversary to choose x~")
        self.network = network
        self.adversary = adversary
        self.ce_on = ce_on
        self.h = h
        self._h = semimetrics.get(h)
        self.lambda_reg = float(lambda_reg)
        self.seed = seed
        self._seed_generator = keras.random.SeedGenerator(seed)
        self._trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "ce", "reg")}
        self._accuracy_nat = keras.metrics.SparseCategoricalAccuracy(name="acc_nat")
        self._accuracy_adv = keras.metrics.SparseCategoricalAccuracy(name="acc_adv")
        self.built = network.built
        self._multi_worker = isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy)

    @property
    def _uses_nat(self) -> bool:
        """Whether the loss needs f(x) besides f(x~)."""
        return self.adversary is None or self.ce_on != "rob" or self.lambda_reg > 0

    def _maybe_symbolic_build(self, iterator=None, data_batch=None) -> None:
        """Builds the optimizer in the strategy scope before training.

        The network is built already, so the optimizer is all Keras' symbolic
        build would create; Keras' own version first averages a data batch over
        replicas, which fails under MultiWorkerMirroredStrategy
        (keras-team/keras#20585).
        """
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.network(inputs, training=training)

    def train_step(self, data):
        x, y = data[0], data[1]
        x_adv = self._choose_transformed(x, y)
        with tf.GradientTape() as tape:
            nat, adv = self._forward(x, x_adv)
            ce = self._ce_term(y, nat, adv)
            reg = tf.reduce_mean(self._h(nat, adv)) if adv is not None and nat is not None else 0.0
            loss = ce + self.lambda_reg * reg + tf.add_n([0.0] + self.network.losses)
            replica_loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
        gradients = tape.gradient(replica_loss, self.network.trainable_variables)
        self.optimizer.apply(gradients, self.network.trainable_variables)
        return self._update_metrics(y, nat, adv, loss=loss, ce=ce, reg=reg)

    def test_step(self, data):
        x, y = data[0], data[1]
        logits = self.network(x, training=False)
        self._trackers["ce"].update_state(_mean_ce(y, logits))
        self._accuracy_nat.update_state(y, logits)
        return self._logs([self._trackers["ce"], self._accuracy_nat])

    def _choose_transformed(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor | None:
        """x~ for the batch, or None for standard training."""
        if self.adversary is None:
            return None
        params = self.adversary(self.network, x, y, seed=self._seed_generator.next())
        return tf.stop_gradient(transforms.transform(x, params))

    def _forward(self, x: tf.Tensor, x_adv: tf.Tensor | None) -> tuple[tf.Tensor | None, tf.Tensor | None]:
        """Logits (f(x), f(x~)) from one training-mode pass; None for what the loss does not use."""
        if x_adv is None:
            return self.network(x, training=True), None
        if not self._uses_nat:
            return None, self.network(x_adv, training=True)
        nat, adv = tf.split(self.network(tf.concat([x, x_adv], axis=0), training=True), 2)
        return nat, adv

    def _ce_term(self, y: tf.Tensor, nat: tf.Tensor | None, adv: tf.Tensor | None) -> tf.Tensor:
        if self.ce_on == "nat":
            return _mean_ce(y, nat)
        if self.ce_on == "rob":
            return _mean_ce(y, adv)
        return (_mean_ce(y, nat) + _mean_ce(y, adv)) / 2

    def _update_metrics(self, y, nat, adv, **values) -> dict:
        for name, value in values.items():
            self._trackers[name].update_state(value)
        if nat is not None:
            self._accuracy_nat.update_state(y, nat)
        if adv is not None:
            self._accuracy_adv.update_state(y, adv)
        shown = [*self._trackers.values()]
        shown += [self._accuracy_nat] if nat is not None else []
        shown += [self._accuracy_adv] if adv is not None else []
        return self._logs(shown)

    def _logs(self, metrics: list[keras.metrics.Metric]) -> dict[str, tf.Tensor]:
        """Metric results by name; shape [1] under MultiWorkerMirroredStrategy, where Keras averages logs
        over axis 0 across workers and fails on scalars (keras-team/keras#20585)."""
        if self._multi_worker:
            return {metric.name: tf.reshape(metric.result(), [1]) for metric in metrics}
        return {metric.name: metric.result() for metric in metrics}

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [*self._trackers.values(), self._accuracy_nat, self._accuracy_adv]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "network": keras.saving.serialize_keras_object(self.network),
            "adversary": None if self.adversary is None else adversaries.serialize(self.adversary),
            "ce_on": self.ce_on,
            "h": self.h,
            "lambda_reg": self.lambda_reg,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict) -> "InvarianceModel":
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)

"""The regularised Keras model: invariance-inducing training of any classifier network."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from invariance_tf import adversaries, distribute, semimetrics, transforms
from invariance_tf.options import Naming

CE_ON = ("nat", "rob", "mix")
CE_ADVERSARY_OBJECTIVES = ("same", "ce")
CHECKED_ARGUMENTS = (
    "adversary",
    "ce_on",
    "ce_adversary_objective",
    "h",
    "lambda_reg",
    "label_smoothing",
    "reference_half_batch_ce",
)
"""What `check_arguments` rules on: `InvarianceModel`'s arguments, each also a flag."""


def check_arguments(arguments: Mapping[str, Any], flags: bool = False) -> None:
    """Raises ValueError with the one-line error of the first rule on the model's `arguments` they break.

    The one statement of these rules, for `InvarianceModel` and `trainers.fit` (`ExperimentConfig.validate`) alike.
    `arguments` maps each of `CHECKED_ARGUMENTS` to its value, the adversary by its name (None for standard
    training). The error names values as arguments (`lambda_reg=-1.0 is invalid: must be >= 0`) or, with `flags`,
    as the flags that set them (`--lambda_reg=-1.0 is invalid: must be >= 0`).
    """
    named = Naming(arguments, flags)
    adversary, ce_on, lambda_reg = arguments["adversary"], arguments["ce_on"], arguments["lambda_reg"]
    label_smoothing = arguments["label_smoothing"]
    uses_transformed = ce_on != "nat" or lambda_reg > 0
    rules = [
        (ce_on in CE_ON, named.invalid("ce_on", f"valid values are {named.choices(CE_ON)}")),
        (
            arguments["ce_adversary_objective"] in CE_ADVERSARY_OBJECTIVES,
            named.invalid("ce_adversary_objective", f"valid values are {named.choices(CE_ADVERSARY_OBJECTIVES)}"),
        ),
        (
            arguments["h"] in semimetrics.SEMIMETRICS,
            named.invalid("h", f"valid semimetrics are {named.choices(sorted(semimetrics.SEMIMETRICS))}"),
        ),
        (math.isfinite(lambda_reg) and lambda_reg >= 0, named.invalid("lambda_reg", "must be >= 0")),
        (0 <= label_smoothing < 1, named.invalid("label_smoothing", "must be in [0, 1)")),
        (
            adversary is not None or not uses_transformed,
            f"{named('adversary')} cannot give x~ for {named('ce_on')} {named('lambda_reg')}: choose random, "
            "worst_of_k or spgd",
        ),
        (
            adversary is None or uses_transformed,
            f"{named('adversary')} is never used with {named('ce_on')} {named('lambda_reg', 0)}: use "
            f"{named('adversary', None)} (standard training), {named('ce_on', 'rob')} or {named.value('mix')}, or "
            f"{named.name('lambda_reg')} > 0",
        ),
        (
            not arguments["reference_half_batch_ce"] or ce_on == "rob",
            f"{named('reference_half_batch_ce')} needs {named('ce_on', 'rob')} (the reference A.T. config, its CE "
            f"on half of the transformed batch); got {named('ce_on')}",
        ),
    ]
    for ok, error in rules:
        if not ok:
            raise ValueError(error)


def _unpack_unweighted(data) -> tuple[tf.Tensor, tf.Tensor]:
    """`(x, y)` of a batch; a batch with sample weights (or fit's `class_weight`) is refused."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if sample_weight is not None:
        raise ValueError(
            "InvarianceModel does not support sample weights or class_weight: the paper's loss "
            "weighs every example equally; got a batch (x, y, sample_weight)"
        )
    return x, y


def _mean_ce(labels: tf.Tensor, logits: tf.Tensor, label_smoothing: float = 0.0) -> tf.Tensor:
    if not label_smoothing:
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    one_hot = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(logits)[-1], dtype=logits.dtype)
    return tf.reduce_mean(
        keras.losses.categorical_crossentropy(one_hot, logits, from_logits=True, label_smoothing=label_smoothing)
    )


@keras.saving.register_keras_serializable(package="invariance_tf")
class InvarianceModel(distribute.MultiWorkerWorkarounds, keras.Model):
    """Trains `network` with `loss = CE term + lambda_reg * mean h(f(x), f(x~)) + weight decay`.

    x~ is chosen per example by `adversary` (random, worst-of-k or S-PGD; no
    gradient flows through the choice). The CE term is on the natural batch
    (`ce_on="nat"`), the transformed batch (`"rob"`) or both (`"mix"`, the mean
    over the 2B examples). With `ce_adversary_objective="ce"` and an adversary
    maximising h, the CE term gets its own x~, worst w.r.t. CE (the reference
    code's three-fold batch: x, x~ for h, x~ for CE; "mix" is then the mean over
    x and the CE's x~). Natural and transformed images go through the
    network in one forward pass. Weight decay is the network's own
    regularisation losses. With `adversary=None` it is standard training.
    Training logs loss, ce, reg, acc_nat (accuracy on x) and acc_adv (on the
    CE term's x~, which is h's x~ unless the CE term has its own).

    The loss is the method, so `compile` takes the optimizer (and Keras'
    execution options) but refuses `loss=` and `metrics=`. `jit_compile=True`
    compiles the whole step with XLA (search, forward passes, penalty,
    gradient and update; every resampling is `transforms.transform_xla`'s
    plain gathers), and `"auto"` resolves as Keras does: on where a GPU is
    present, off on CPUs and under a `tf.distribute` strategy. Sample weights
    (and `class_weight`) are refused: the paper's loss has none. Under a
    mixed-precision policy the logits are cast to float32 and the loss is
    scaled by the optimizer (`mixed_float16` gets Keras' `LossScaleOptimizer`).

    Args:
        network: a Keras model mapping raw images [B, H, W, C] to logits.
        adversary: an `adversaries.Adversary`, its `adversaries.serialize` dict, or None.
        ce_on: "nat", "rob" or "mix".
        ce_adversary_objective: what the CE term's x~ maximises: "same" (the x~ of h, one transformed copy
            per example) or "ce" (its own worst case w.r.t. CE when the adversary maximises h).
        h: semimetric name, "kl" or "l2".
        lambda_reg: weight of the invariance penalty, >= 0.
        label_smoothing: label smoothing of the CE term, in [0, 1).
        seed: seed of the adversary's random draws (None: a random one, which `get_config` records).
        reference_half_batch_ce: reproduces a quirk of the reference code's A.T. config (`at_rob_wo_10.json`),
            not the method: with `ce_on="rob"` the CE term is the mean over the second half of the
            transformed batch only (the first half still passes through batch norm). Off by default.
    """

    def __init__(
        self,
        network: keras.Model,
        adversary: adversaries.Adversary | dict | None = None,
        ce_on: str = "nat",
        h: str = "kl",
        lambda_reg: float = 0.0,
        label_smoothing: float = 0.0,
        seed: int | None = None,
        ce_adversary_objective: str = "same",
        reference_half_batch_ce: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Raw pixels reach the network as given (as in Keras' Functional models): under a mixed policy Keras
        # would round them to the compute dtype first, e.g. a transformed pixel 200.3 to bfloat16 200.
        # `__call__` converts NumPy arrays and lists to float32 instead.
        self._convert_input_args = False
        if isinstance(adversary, dict):
            adversary = adversaries.deserialize(adversary)
        self.network = network
        self.adversary = adversary
        self.reference_half_batch_ce = bool(reference_half_batch_ce)
        self.ce_on = ce_on
        self.ce_adversary_objective = ce_adversary_objective
        self.h = h
        self.lambda_reg = float(lambda_reg)
        self.label_smoothing = float(label_smoothing)
        self._check_arguments()
        self._h = semimetrics.get(h)
        self.seed = seed
        self._draw_seed = seed if seed is not None else random.randrange(2**31)
        self._trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "ce", "reg")}
        self._accuracy_nat = keras.metrics.SparseCategoricalAccuracy(name="acc_nat")
        self._accuracy_adv = keras.metrics.SparseCategoricalAccuracy(name="acc_adv")
        self.built = network.built

    @property
    def _uses_nat(self) -> bool:
        """Whether the loss needs f(x) besides f(x~)."""
        return self.adversary is None or self.ce_on != "rob" or self.lambda_reg > 0

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs) -> None:
        """Keras' `compile` for the optimizer and execution options; the loss and metrics are the method's."""
        refused = {
            name: value
            for name, value in {"loss": loss, "metrics": metrics, **kwargs}.items()
            if name in ("loss", "metrics", "loss_weights", "weighted_metrics") and value is not None
        }
        if refused:
            raise ValueError(
                f"InvarianceModel computes its own loss and metrics; got {refused}. "
                "Pass only the optimizer (and e.g. jit_compile) to compile()."
            )
        super().compile(optimizer=optimizer, **kwargs)

    def _check_arguments(self) -> None:
        """`check_arguments` on the model's arguments, an adversary by its name."""
        adversary = None if self.adversary is None else self.adversary.name or type(self.adversary).__name__
        check_arguments(
            {**{name: getattr(self, name) for name in CHECKED_ARGUMENTS if name != "adversary"}, "adversary": adversary}
        )

    def compile_from_config(self, config: dict) -> None:
        """Recompiles a loaded model with its saved optimizer (Keras skips this for a custom `compile`)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def __call__(self, inputs: tf.Tensor | np.ndarray | list, *args, **kwargs) -> tf.Tensor:
        """Keras' `__call__`, taking NumPy arrays and lists like any Keras model.

        They become float32 tensors, so raw pixels are not rounded to a mixed policy's compute dtype.
        """
        if isinstance(inputs, (np.ndarray, list)):
            inputs = tf.convert_to_tensor(inputs, tf.float32)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        return tf.cast(self.network(inputs, training=training), tf.float32)

    def train_step(self, data: tuple) -> dict:
        """One step of the method: choose x~, then descend on CE term + lambda * mean h(f(x), f(x~))."""
        x, y = _unpack_unweighted(data)
        x_adv, x_adv_ce = self._choose_transformed(x, y)
        with tf.GradientTape() as tape:
            nat, adv, adv_ce = self._forward(x, x_adv, x_adv_ce)
            ce = self._ce_term(y, nat, adv_ce)
            reg = tf.reduce_mean(self._h(nat, adv)) if adv is not None and nat is not None else 0.0
            loss = ce + self.lambda_reg * reg + tf.add_n([0.0] + self.network.losses)
            replica_loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
            scaled_loss = self.optimizer.scale_loss(replica_loss)
        gradients = tape.gradient(scaled_loss, self.network.trainable_variables)
        self.optimizer.apply(gradients, self.network.trainable_variables)
        return self._update_metrics(y, nat, adv_ce, loss=loss, ce=ce, reg=reg)

    def test_step(self, data: tuple) -> dict:
        """Clean CE and accuracy on one batch."""
        x, y = _unpack_unweighted(data)
        logits = self(x, training=False)
        self._trackers["ce"].update_state(_mean_ce(y, logits, self.label_smoothing))
        self._accuracy_nat.update_state(y, logits)
        return self._logs([self._trackers["ce"], self._accuracy_nat])

    def _choose_transformed(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor | None, tf.Tensor | None]:
        """(x~ of h, the CE term's own x~).

        (None, None) for standard training, (x~, None) when one x~ serves both terms.
        """
        if self.adversary is None:
            return None, None
        params = self.adversary.choose(self, x, y, self._objectives(), seed=self._step_seed())
        transformed = [tf.stop_gradient(transforms.transform_xla(x, p, self.adversary.resampling)) for p in params]
        return transformed[0], (transformed[1] if len(transformed) > 1 else None)

    def _objectives(self) -> list[str | None]:
        """What the step's x~ maximise: [the adversary's own], or [h's, "ce"] for a CE term with its own worst case.

        It is ["ce"] alone when h is not trained.
        """
        own = getattr(self.adversary, "objective", None)
        if (
            self.ce_adversary_objective == "same"
            or self.ce_on == "nat"
            or own == "ce"
            or not self.adversary.uses_objective
        ):
            return [own]
        return [own, "ce"] if self.lambda_reg > 0 else ["ce"]

    def _step_seed(self) -> tf.Tensor:
        """The stateless seed of this step's adversary draws: the model's seed and the optimizer's step count.

        Backups restore the step count, so a resumed run draws what an uninterrupted one would. With several
        replicas the seed also folds in the replica's index, so that each replica's examples get their own draws.
        Its words are `transforms.xla_safe_seed`'s, so that the step draws the same compiled with XLA or not.
        """
        seed = tf.stack([tf.constant(self._draw_seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(replica.replica_id_in_sync_group, tf.int64))
        return transforms.xla_safe_seed(seed)

    def _forward(
        self, x: tf.Tensor, x_adv: tf.Tensor | None, x_adv_ce: tf.Tensor | None
    ) -> tuple[tf.Tensor | None, tf.Tensor | None, tf.Tensor | None]:
        """Logits (f(x), f(x~), f(x~ of the CE term)) from one training-mode pass; None for what the loss skips."""
        if x_adv is None:
            return self(x, training=True), None, None
        inputs = ([x] if self._uses_nat else []) + [x_adv] + ([] if x_adv_ce is None else [x_adv_ce])
        outputs = tf.split(self(tf.concat(inputs, axis=0), training=True), len(inputs))
        nat = outputs.pop(0) if self._uses_nat else None
        return nat, outputs[0], outputs[-1]

    def _ce_term(self, y: tf.Tensor, nat: tf.Tensor | None, adv: tf.Tensor | None) -> tf.Tensor:
        if self.ce_on == "nat":
            return _mean_ce(y, nat, self.label_smoothing)
        if self.ce_on == "rob" and self.reference_half_batch_ce:
            half = tf.shape(adv)[0] // 2
            return _mean_ce(y[half:], adv[half:], self.label_smoothing)
        if self.ce_on == "rob":
            return _mean_ce(y, adv, self.label_smoothing)
        return (_mean_ce(y, nat, self.label_smoothing) + _mean_ce(y, adv, self.label_smoothing)) / 2

    def _update_metrics(
        self, y: tf.Tensor, nat: tf.Tensor | None, adv: tf.Tensor | None, **values: tf.Tensor | float
    ) -> dict:
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

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [*self._trackers.values(), self._accuracy_nat, self._accuracy_adv]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "network": keras.saving.serialize_keras_object(self.network),
            "adversary": None if self.adversary is None else adversaries.serialize(self.adversary),
            "ce_on": self.ce_on,
            "ce_adversary_objective": self.ce_adversary_objective,
            "h": self.h,
            "lambda_reg": self.lambda_reg,
            "label_smoothing": self.label_smoothing,
            "seed": self._draw_seed,
            "reference_half_batch_ce": self.reference_half_batch_ce,
        }

    @classmethod
    def from_config(cls, config: dict) -> InvarianceModel:
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)


def classifier_network(model: keras.Model) -> keras.Model:
    """The plain classifier inside an `InvarianceModel` (or the model itself)."""
    return getattr(model, "network", model)

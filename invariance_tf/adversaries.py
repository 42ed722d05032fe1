"""Choice of the transformed input x~: random, worst-of-k and spatial PGD (S-PGD).

An adversary maps a batch `(x, y)` to one transformation `(dx, dy, angle)` per
example (see `invariance_tf.transforms` for units and sign conventions), within
`[-limits, limits]`. The objective it maximises is either `"ce"`, the
cross-entropy CE(f(x'), y), or the name of a semimetric h, h(f(x), f(x')).

Adversaries call the network in inference mode (`training=False`), so the
search neither uses nor updates batch-norm batch statistics. They are plain
callables built from TF ops, meant to run inside a `tf.function` (a Keras
`train_step`); the result carries no gradient.

`check_arguments` states the rules on the adversaries' arguments once, for
their constructors and for the flags of `trainers.fit` that set them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from invariance_tf import semimetrics, transforms
from invariance_tf.options import Naming, Rule, check_values

Model = Callable[..., tf.Tensor]
Seed = tf.Tensor | Sequence[int] | None
OBJECTIVES = ("ce", *sorted(semimetrics.SEMIMETRICS))
Objective = Callable[[tf.Tensor, tf.Tensor, tf.Tensor | None], tf.Tensor]


def _at_least_one(value: Any) -> bool:
    """Whether `value` as an int is >= 1: a count of candidates, steps or restarts."""
    return int(value) >= 1


RULES: tuple[Rule, ...] = (
    transforms.LIMITS_RULE,
    transforms.RESAMPLING_RULE,
    ("objective", lambda objective: objective in OBJECTIVES, f"valid objectives are {list(OBJECTIVES)}"),
    ("k", _at_least_one, "must be >= 1"),
    ("max_batch", lambda max_batch: max_batch is None or _at_least_one(max_batch), "must be >= 1 or None"),
    ("steps", _at_least_one, "must be >= 1"),
    ("restarts", _at_least_one, "must be >= 1"),
    (
        "step_size",
        lambda step_size: step_size is None or transforms.are_limits(step_size),
        f"must be None or {transforms.VALID_LIMITS}",
    ),
)
"""The rules on the adversaries' arguments, one per argument, in the order `check_arguments` applies them."""


def check_arguments(
    arguments: Mapping[str, Any], flags: bool = False, flag_names: Mapping[str, str] | None = None
) -> None:
    """Raises ValueError with the one-line error of the first rule on adversaries' `arguments` they break.

    The one statement of these rules, for the adversaries' constructors and `trainers.fit`
    (`ExperimentConfig.validate`) alike: `RULES`, then that S-PGD restarts need a random start. `arguments` maps
    any of the constructors' arguments to their values; rules on the others are skipped. The error names values
    as arguments (`k=0 is invalid: must be >= 1`) or, with `flags`, as the flags that set them, `flag_names`
    mapping an argument to its flag when their names differ (`{"steps": "spgd_steps"}`: `--spgd_steps=0 ...`).
    """
    named = Naming(arguments, flags, flag_names)
    check_values(named, RULES)
    if int(arguments.get("restarts", 1)) > 1 and not arguments.get("random_start", True):
        raise ValueError(
            f"{named('restarts')} need {named('random_start', True)}: without a random start every restart ascends "
            "from t = 0 and finds the same t"
        )


def objective_fn(name: str) -> Objective:
    """Per-example objective `(logits_adv, labels, logits_nat) -> [B]` named `name`, one of `OBJECTIVES`."""
    check_arguments({"objective": name})
    if name == "ce":
        return lambda logits_adv, labels, logits_nat: keras.losses.sparse_categorical_crossentropy(
            labels, logits_adv, from_logits=True
        )
    h = semimetrics.get(name)
    return lambda logits_adv, labels, logits_nat: h(logits_nat, logits_adv)


def _keep_best(
    params: tf.Tensor, value: tf.Tensor, best_params: tf.Tensor, best_value: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per example, the (params, value) pair with the larger value."""
    better = value > best_value
    return tf.where(better[:, None], params, best_params), tf.where(better, value, best_value)


def _repeat_batch(tensor: tf.Tensor, times: int) -> tf.Tensor:
    """Stacks `times` copies of a batch along axis 0: [B, ...] -> [times * B, ...]."""
    return tf.tile(tensor, [times] + [1] * (len(tensor.shape) - 1))


class Adversary:
    """Base class: chooses a transformation per example within `limits` (dx px, dy px, angle deg).

    `resampling` ("composed" or "reference", see `invariance_tf.transforms`) is
    how its candidates are resampled, and how the caller should resample x~.
    """

    name: str = ""
    uses_objective: bool = False
    """Whether the choice depends on the objective (a search), so that two objectives need two x~."""

    def __init__(self, limits: Sequence[float] = transforms.DEFAULT_LIMITS, resampling: str = "composed"):
        check_arguments({"limits": limits, "resampling": resampling})
        self.limits = tuple(float(limit) for limit in limits)
        self.resampling = resampling

    def __call__(
        self, model: Model, images: tf.Tensor, labels: tf.Tensor, seed: Seed = None, logits_nat: tf.Tensor | None = None
    ) -> tf.Tensor:
        """Returns params [B, 3] for `images` [B, H, W, C] (raw pixels) and integer `labels` [B].

        `seed` is a stateless seed (shape [2]) for the random draws, or None for
        TF's global random state. `logits_nat` may pass `model(images)` when the
        caller already has it.
        """
        raise NotImplementedError

    def choose(
        self,
        model: Model,
        images: tf.Tensor,
        labels: tf.Tensor,
        objectives: Sequence[str | None],
        seed: Seed = None,
        logits_nat: tf.Tensor | None = None,
    ) -> list[tf.Tensor]:
        """Params [B, 3] per objective in `objectives`, from one search per objective.

        This serves a loss whose terms each want their own worst case (e.g. CE and h). An adversary without an
        objective returns its one choice for all of them.
        """
        return [self(model, images, labels, seed=seed, logits_nat=logits_nat)] * len(objectives)

    def get_config(self) -> dict:
        return {"limits": list(self.limits), "resampling": self.resampling}


class RandomTransform(Adversary):
    """x~ = x transformed by t ~ Uniform([-limits, limits]): data augmentation ("D.A.")."""

    name = "random"

    def __call__(
        self, model: Model, images: tf.Tensor, labels: tf.Tensor, seed: Seed = None, logits_nat: tf.Tensor | None = None
    ) -> tf.Tensor:
        return transforms.sample_uniform(tf.shape(images)[0], self.limits, seed)


class _ObjectiveAdversary(Adversary):
    """An adversary that maximises a per-example objective ("ce" or a semimetric name)."""

    uses_objective = True

    def __init__(
        self, objective: str = "ce", limits: Sequence[float] = transforms.DEFAULT_LIMITS, resampling: str = "composed"
    ):
        super().__init__(limits, resampling)
        self.objective = objective
        self._objective_fn = objective_fn(objective)

    def _needs_nat(self) -> bool:
        return self.objective != "ce"

    def choose(
        self,
        model: Model,
        images: tf.Tensor,
        labels: tf.Tensor,
        objectives: Sequence[str | None],
        seed: Seed = None,
        logits_nat: tf.Tensor | None = None,
    ) -> list[tf.Tensor]:
        """Params [B, 3] per objective: this adversary's search w.r.t. each, with independent draws."""
        if seed is None or len(objectives) == 1:
            seeds = [seed] * len(objectives)
        else:
            seeds = transforms.split_seed(seed, len(objectives))
        return [
            self.with_objective(objective)(model, images, labels, seed=seeds[i], logits_nat=logits_nat)
            for i, objective in enumerate(objectives)
        ]

    def with_objective(self, objective: str) -> _ObjectiveAdversary:
        """The same adversary maximising `objective` instead."""
        return self if objective == self.objective else type(self)(**{**self.get_config(), "objective": objective})

    def get_config(self) -> dict:
        return {**super().get_config(), "objective": self.objective}


class WorstOfK(_ObjectiveAdversary):
    """Per example, the transformation maximising the objective among `k` uniform draws ("A.T.").

    All k candidates of a batch are evaluated in `ceil(k * B / max_batch)`
    model calls (one call when `max_batch` is None; k calls of B images when
    the batch size is unknown while tracing, as in `fit` on arrays). With
    k = 1 it draws the same transformation as `RandomTransform` for the same seed.
    Several objectives (`choose`) get independent searches, as in the reference
    code (2k draws for two); `shared_candidates=True` picks each objective's
    worst from the same k draws instead, one set of model calls for all.
    """

    name = "worst_of_k"

    def __init__(
        self,
        k: int = 10,
        objective: str = "ce",
        limits: Sequence[float] = transforms.DEFAULT_LIMITS,
        max_batch: int | None = None,
        shared_candidates: bool = False,
        resampling: str = "composed",
    ):
        super().__init__(objective, limits, resampling)
        check_arguments({"k": k, "max_batch": max_batch})
        self.k = int(k)
        self.max_batch = None if max_batch is None else int(max_batch)
        self.shared_candidates = bool(shared_candidates)

    @property
    def uses_objective(self) -> bool:
        """Worst-of-1 is a random draw: no search."""
        return self.k > 1

    def __call__(
        self, model: Model, images: tf.Tensor, labels: tf.Tensor, seed: Seed = None, logits_nat: tf.Tensor | None = None
    ) -> tf.Tensor:
        return self.choose(model, images, labels, [self.objective], seed=seed, logits_nat=logits_nat)[0]

    def choose(
        self,
        model: Model,
        images: tf.Tensor,
        labels: tf.Tensor,
        objectives: Sequence[str | None],
        seed: Seed = None,
        logits_nat: tf.Tensor | None = None,
    ) -> list[tf.Tensor]:
        """Per objective, the worst of k uniform draws w.r.t. it.

        The draws are independent per objective, or with `shared_candidates` the same k draws (one set of model
        calls) for every objective.
        """
        if self.k > 1 and logits_nat is None and any(objective != "ce" for objective in objectives):
            logits_nat = model(images, training=False)
        if len(objectives) > 1 and not self.shared_candidates:
            return super().choose(model, images, labels, objectives, seed=seed, logits_nat=logits_nat)
        return self._search(model, images, labels, objectives, seed, logits_nat)

    def _search(
        self,
        model: Model,
        images: tf.Tensor,
        labels: tf.Tensor,
        objectives: Sequence[str | None],
        seed: Seed,
        logits_nat: tf.Tensor | None,
    ) -> list[tf.Tensor]:
        """Per objective, the best of one set of k candidates."""
        batch = tf.shape(images)[0]
        candidates = self.sample_candidates(batch, seed)
        if self.k == 1:
            return [candidates[0]] * len(objectives)
        functions = [objective_fn(objective) for objective in objectives]
        values = [
            tf.concat(group_values, axis=0)
            for group_values in zip(
                *(
                    self._objective_values(model, images, labels, logits_nat, group, functions)
                    for group in self._candidate_groups(candidates, images.shape[0])
                )
            )
        ]
        by_example = tf.transpose(candidates, [1, 0, 2])
        return [
            tf.stop_gradient(tf.gather(by_example, tf.argmax(value, axis=0, output_type=tf.int32), batch_dims=1))
            for value in values
        ]

    def sample_candidates(self, batch: int | tf.Tensor, seed: Seed) -> tf.Tensor:
        """The k uniform draws of one search, [k, batch, 3].

        Candidate j of example i is row j * batch + i of `transforms.sample_uniform(k * batch, limits, seed)`.
        """
        return tf.reshape(transforms.sample_uniform(self.k * batch, self.limits, seed), [self.k, batch, 3])

    def _candidate_groups(self, candidates: tf.Tensor, static_batch: int | None) -> list[tf.Tensor]:
        """Splits the k candidates into groups that fit `max_batch` images per model call.

        When the batch size is not static, each call takes one candidate.
        """
        if self.max_batch is None:
            return [candidates]
        per_call = 1 if static_batch is None else max(1, self.max_batch // static_batch)
        return [candidates[i : i + per_call] for i in range(0, self.k, per_call)]

    def _objective_values(
        self,
        model: Model,
        images: tf.Tensor,
        labels: tf.Tensor,
        logits_nat: tf.Tensor | None,
        group: tf.Tensor,
        functions: Sequence[Objective],
    ) -> list[tf.Tensor]:
        """Each objective function's value for each candidate in `group` [g, B, 3], as [g, B], from one model call."""
        g = group.shape[0]
        batch = tf.shape(images)[0]
        moved = transforms.transform_xla(_repeat_batch(images, g), tf.reshape(group, [-1, 3]), self.resampling)
        logits = model(moved, training=False)
        nat = None if logits_nat is None else _repeat_batch(logits_nat, g)
        repeated_labels = _repeat_batch(labels, g)
        return [tf.reshape(function(logits, repeated_labels, nat), [g, batch]) for function in functions]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "k": self.k,
            "max_batch": self.max_batch,
            "shared_candidates": self.shared_candidates,
        }


class SPGD(_ObjectiveAdversary):
    """Spatial PGD: projected sign-gradient ascent on the transformation itself.

    Starts uniform in the limits (or at the identity), takes `steps` steps of
    `step_size * sign(gradient)` per coordinate (default 2.5 * limits / steps),
    projects onto the limits after each, and returns the best iterate seen;
    `restarts` repeats the search from new random starts and keeps the best.
    Uses `transforms.transform_differentiable` for the gradient.
    """

    name = "spgd"

    def __init__(
        self,
        steps: int = 5,
        objective: str = "ce",
        limits: Sequence[float] = transforms.DEFAULT_LIMITS,
        step_size: Sequence[float] | None = None,
        restarts: int = 1,
        random_start: bool = True,
        resampling: str = "composed",
    ):
        super().__init__(objective, limits, resampling)
        check_arguments({"steps": steps, "restarts": restarts, "random_start": random_start, "step_size": step_size})
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.random_start = bool(random_start)
        if step_size is None:
            step_size = [2.5 * limit / self.steps for limit in self.limits]
        self.step_size = tuple(float(s) for s in step_size)

    def __call__(
        self, model: Model, images: tf.Tensor, labels: tf.Tensor, seed: Seed = None, logits_nat: tf.Tensor | None = None
    ) -> tf.Tensor:
        images = tf.convert_to_tensor(images, tf.float32)
        batch = tf.shape(images)[0]
        if logits_nat is None and self._needs_nat():
            logits_nat = model(images, training=False)
        if seed is None:
            seeds = [None] * self.restarts
        else:
            split = transforms.split_seed(seed, self.restarts)
            seeds = [split[i] for i in range(self.restarts)]
        best_params = tf.zeros([batch, 3])
        best_value = tf.fill([batch], float("-inf"))
        for restart_seed in seeds:
            start = (
                transforms.sample_uniform(batch, self.limits, restart_seed)
                if self.random_start
                else tf.zeros([batch, 3])
            )
            params, value = self._ascend(model, images, labels, logits_nat, start)
            best_params, best_value = _keep_best(params, value, best_params, best_value)
        return tf.stop_gradient(best_params)

    def _value_and_grad(
        self, model: Model, images: tf.Tensor, labels: tf.Tensor, logits_nat: tf.Tensor | None, params: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(params)
            logits = model(transforms.transform_differentiable(images, params, self.resampling), training=False)
            value = self._objective_fn(logits, labels, logits_nat)
        return value, tape.gradient(value, params)

    def _ascend(
        self, model: Model, images: tf.Tensor, labels: tf.Tensor, logits_nat: tf.Tensor | None, start: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One S-PGD run from `start`; returns the best iterate and its objective value."""
        step = tf.constant(self.step_size, tf.float32)

        def body(i, params, best_params, best_value):
            value, grad = self._value_and_grad(model, images, labels, logits_nat, params)
            best_params, best_value = _keep_best(params, value, best_params, best_value)
            params = transforms.project(params + step * tf.sign(grad), self.limits)
            return i + 1, params, best_params, best_value

        _, params, best_params, best_value = tf.while_loop(
            lambda i, *_: i < self.steps,
            body,
            (tf.constant(0), start, start, tf.fill([tf.shape(start)[0]], float("-inf"))),
        )
        value = self._objective_fn(
            model(transforms.transform_xla(images, params, self.resampling), training=False), labels, logits_nat
        )
        return _keep_best(params, value, best_params, best_value)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "steps": self.steps,
            "step_size": list(self.step_size),
            "restarts": self.restarts,
            "random_start": self.random_start,
        }


ADVERSARIES: dict[str, type[Adversary]] = {cls.name: cls for cls in (RandomTransform, WorstOfK, SPGD)}


def get(name: str, **kwargs) -> Adversary:
    """Builds the adversary registered as `name` ('random', 'worst_of_k', 'spgd')."""
    if name not in ADVERSARIES:
        raise ValueError(f"Unknown adversary {name!r}; valid adversaries are {sorted(ADVERSARIES)}")
    return ADVERSARIES[name](**kwargs)


def serialize(adversary: Adversary) -> dict:
    """A JSON-able description `{"name": ..., **config}` that `deserialize` rebuilds."""
    return {"name": adversary.name, **adversary.get_config()}


def deserialize(config: dict) -> Adversary:
    """Rebuilds an adversary from `serialize`'s output."""
    config = dict(config)
    return get(config.pop("name"), **config)

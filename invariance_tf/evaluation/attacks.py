"""The attack registry: every attack by name, with its own options, their checks and its own summary fields.

`evaluate`, `trainers.evaluate --attack=<name>` (its flags are the attacks' options), `resumable(<name>, ...)`,
`run_attack` and the final metrics of `trainers.fit` (`final_metrics`) all look attacks up in `ATTACKS`, so adding
an attack is one entry:

    ATTACKS["my_attack"] = Attack(
        my_attack_accuracy,
        options={"my_steps": Option("steps", 5, "steps of my_attack", valid=lambda n: n >= 1, rule="must be >= 1")},
        summary=lambda results, seconds: {"mean_margin": float(results["my_attack"].margin.mean())},
    )

Its function takes `(model, images, labels, **arguments)` and returns a `RobustResult`. Of the settings every
attack shares (`limits`, `batch_size`, `resampling`, `seed`, `verbose`) it gets those its signature names
(`Attack.accepted`); each of its `options` sets one more argument.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from invariance_tf import adversaries, transforms
from invariance_tf.evaluation.clean import clean_result
from invariance_tf.evaluation.grid import METHODS, grid_accuracy
from invariance_tf.evaluation.refined import describe_refinement, refine, refinement_summary
from invariance_tf.evaluation.result import RobustResult
from invariance_tf.evaluation.spgd import spgd_accuracy
from invariance_tf.evaluation.worst_of_k import worst_of_k_accuracy
from invariance_tf.options import Naming, Rule, check_values

GRID_SIZE = int(np.prod(transforms.DEFAULT_GRANULARITY))
FINAL_GROUPS = ("test", "grid")
"""Where a `trainers.fit` run's final metrics grade an attack (`Attack.final`)."""


@dataclasses.dataclass(frozen=True)
class Option:
    """A setting of one attack that its caller chooses: an argument of its function, and a flag.

    Attributes:
        argument: the parameter of the attack's `run` it sets (of `of`'s `run` when `of` is given).
        default: its value when not given; its type is the flag's (int, float, str or bool).
        help: the help of its `trainers.evaluate` flag.
        valid: `valid(value)`, whether a value is valid; `rule` says which are ("must be >= 1").
        rule: the end of the one-line error of an invalid value.
        choices: the valid values of an enum-like option, or None.
        of: the attack among this one's `inputs` whose `run` takes the argument instead, or None (this one's):
            refined's searches per survivor are the lowest-margin points the grid keeps.
    """

    argument: str
    default: Any
    help: str
    valid: Callable[[Any], bool] = lambda value: True
    rule: str = ""
    choices: Sequence[str] | None = None
    of: str | None = None

    def as_rule(self, name: str) -> Rule:
        """This option's check as an `options.Rule` on the value named `name` (choices first)."""
        if self.choices is not None:
            return name, lambda value: value in self.choices, f"valid values are {list(self.choices)}"
        return name, self.valid, self.rule


@dataclasses.dataclass(frozen=True)
class Attack:
    """An attack known by name.

    Attributes:
        run: `run(model, images, labels, **arguments) -> RobustResult`.
        options: its own settings by name (`Option`); the name is also its `trainers.evaluate` flag and its key in
            `evaluate(options=...)`, unique among the attacks'.
        inputs: per argument of `run`, the attack whose result on the same examples it takes (refined starts
            from the grid's: `{"grid": "grid"}`); that attack runs first, and `resumable` gives each chunk its
            slice of the result.
        gradients: whether it differentiates the model, so a classifier without gradients (ONNX) cannot take it.
        resumable: whether it runs chunk by chunk, each chunk saved (`resumable`); False for a single cheap pass.
        summary: `summary(results, seconds) -> dict`, its own fields in `evaluate`'s summary entry, from the
            results (`RobustResult`) and seconds of it and its inputs by name; None: none.
        describe: `describe(entry) -> str`, a sentence on its summary entry that `trainers.evaluate` prints
            under its table; None: none.
        final: where a `trainers.fit` run's final metrics grade it: "test" (every test image, and the
            `--train_eval_examples` training images), "grid" (the grid's images, resumably, with each
            example's outcome) or None (not at all).
        metric: its accuracy's name in metrics.json, formatted with its options' values (`worst_of_{k}_accuracy`).
    """

    run: Callable[..., RobustResult]
    options: Mapping[str, Option] = dataclasses.field(default_factory=dict)
    inputs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    gradients: bool = False
    resumable: bool = True
    summary: Callable[[Mapping[str, RobustResult], Mapping[str, float]], dict[str, Any]] | None = None
    describe: Callable[[Mapping[str, Any]], str] | None = None
    final: str | None = None
    metric: str = "{attack}_accuracy"

    def takes(self, argument: str) -> bool:
        """Whether `run` has a parameter named `argument`."""
        return argument in inspect.signature(self.run).parameters

    def accepted(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of `settings` that `run` takes: how one set of shared settings reaches every attack."""
        return {name: value for name, value in settings.items() if self.takes(name)}


def _adversaries_rule(argument: str) -> dict[str, Any]:
    """An `Option`'s `valid` and `rule` from the adversaries' rule on `argument` (`adversaries.RULES`)."""
    ((_, valid, rule),) = [entry for entry in adversaries.RULES if entry[0] == argument]
    return {"valid": valid, "rule": rule}


ATTACKS: dict[str, Attack] = {
    "clean": Attack(clean_result, resumable=False, final="test"),
    "worst_of_k": Attack(
        worst_of_k_accuracy,
        options={"k": Option("k", 10, "k of the worst_of_k attack", **_adversaries_rule("k"))},
        final="test",
        metric="worst_of_{k}_accuracy",
    ),
    "spgd": Attack(
        spgd_accuracy,
        options={
            "spgd_steps": Option("steps", 5, "steps of the spgd attack", **_adversaries_rule("steps")),
            "spgd_restarts": Option(
                "restarts", 1, "random restarts of the spgd attack", **_adversaries_rule("restarts")
            ),
        },
        gradients=True,
    ),
    "grid": Attack(
        grid_accuracy,
        options={"grid_method": Option("method", "early_exit", "grid algorithm (same answer)", choices=METHODS)},
        final="grid",
    ),
    "refined": Attack(
        refine,
        options={
            "refine_starts": Option(
                "keep_lowest",
                3,
                "refined attack: searches per grid survivor, from its lowest-margin points",
                valid=lambda starts: 1 <= starts <= GRID_SIZE,
                rule=f"must be in [1, {GRID_SIZE}] (the grid's size)",
                of="grid",
            ),
            "refine_steps": Option(
                "steps", 10, "refined attack: sign-gradient steps per search", **_adversaries_rule("steps")
            ),
        },
        inputs={"grid": "grid"},
        gradients=True,
        summary=refinement_summary,
        describe=describe_refinement,
    ),
}


def get(name: str) -> Attack:
    """`ATTACKS[name]`; raises ValueError (one line) listing the attacks when there is none of that name."""
    if name not in ATTACKS:
        raise ValueError(f"Unknown attack {name!r}; valid attacks are {list(ATTACKS)}")
    return ATTACKS[name]


def with_inputs(names: Iterable[str]) -> list[str]:
    """`names` and, recursively, the attacks whose results they take (`Attack.inputs`), in `ATTACKS` order.

    An attack comes after its inputs, which are registered before it.
    """
    needed = set(names)
    if needed - set(ATTACKS):
        raise ValueError(f"Unknown attacks {sorted(needed - set(ATTACKS))}; valid attacks are {list(ATTACKS)}")
    for name in reversed(ATTACKS):
        if name in needed:
            needed.update(ATTACKS[name].inputs.values())
    return [name for name in ATTACKS if name in needed]


def options() -> dict[str, Option]:
    """Every registered attack's options by name, in `ATTACKS` order; ValueError (one line) if two share a name."""
    found: dict[str, Option] = {}
    for attack, entry in ATTACKS.items():
        for name, option in entry.options.items():
            if name in found:
                raise ValueError(f"attack {attack!r} registers the option {name!r} that another attack has")
            found[name] = option
    return found


def option_values(given: Mapping[str, Any] | None = None, flags: bool = False) -> dict[str, Any]:
    """Every attack option's value: `given`'s, else its default; checked by its rule.

    Raises ValueError (one line) for a name that is no option, listing the options, and for the first invalid
    value, named as its flag (`--k=0 is invalid: must be >= 1`) with `flags`, else as its key (`k=0 ...`).
    """
    known = options()
    unknown = sorted(set(given or {}) - set(known))
    if unknown:
        raise ValueError(f"Unknown attack options {unknown}; valid options are {list(known)}")
    values = {name: option.default for name, option in known.items()} | dict(given or {})
    check_values(Naming(values, flags), [option.as_rule(name) for name, option in known.items()])
    return values


def arguments(name: str, names: Iterable[str], values: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments the option `values` set for the attack `name` when the attacks `names` run.

    Its own options', and those of the attacks among `names` that set an argument of it (`Option.of`).
    """
    own = {option.argument: values[key] for key, option in ATTACKS[name].options.items() if option.of is None}
    asked = {
        option.argument: values[key]
        for other in names
        for key, option in ATTACKS[other].options.items()
        if option.of == name
    }
    return {**own, **asked}

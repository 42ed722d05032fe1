"""The attack registry: every attack by name, with what its callers need to know to run it.

`trainers.evaluate --attack=<name>`, `resumable(<name>, ...)`, `run_attack` and
the final evaluation of `trainers.fit` (`experiment.robust_metrics`) all look
attacks up in `ATTACKS`, so adding an attack is one entry:

    "my_attack": Attack(my_attack_accuracy, flags={"steps": "my_attack_steps"}),

Its function takes `(model, images, labels, **arguments)` and returns a
`RobustResult`. Of the settings its callers share (`limits`, `batch_size`,
`resampling`, `seed`, `verbose`) it gets those its signature names
(`Attack.accepted`); any other argument comes from the `EvaluateOptions` field
(the `trainers.evaluate` flag) named in `flags`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from invariance_tf.evaluation.clean import clean_result
from invariance_tf.evaluation.grid import grid_accuracy
from invariance_tf.evaluation.refined import refine
from invariance_tf.evaluation.result import RobustResult
from invariance_tf.evaluation.spgd import spgd_accuracy
from invariance_tf.evaluation.worst_of_k import worst_of_k_accuracy


@dataclasses.dataclass(frozen=True)
class Attack:
    """An attack known by name.

    Attributes:
        run: `run(model, images, labels, **arguments) -> RobustResult`.
        flags: per argument of `run`, the `EvaluateOptions` field (`trainers.evaluate` flag) that sets it, e.g.
            `{"k": "k"}`.
        inputs: per argument of `run`, the attack whose result on the same examples it takes (refined starts
            from the grid's: `{"grid": "grid"}`); that attack runs first, and `resumable` gives each chunk its
            slice of the result.
        gradients: whether it differentiates the model, so a classifier without gradients (ONNX) cannot take it.
        resumable: whether it runs chunk by chunk, each chunk saved (`resumable`); False for a single cheap pass.
    """

    run: Callable[..., RobustResult]
    flags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    inputs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    gradients: bool = False
    resumable: bool = True

    def takes(self, argument: str) -> bool:
        """Whether `run` has a parameter named `argument`."""
        return argument in inspect.signature(self.run).parameters

    def accepted(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of `settings` that `run` takes: how one set of shared settings reaches every attack."""
        return {name: value for name, value in settings.items() if self.takes(name)}


ATTACKS: dict[str, Attack] = {
    "clean": Attack(clean_result, resumable=False),
    "worst_of_k": Attack(worst_of_k_accuracy, flags={"k": "k"}),
    "spgd": Attack(spgd_accuracy, flags={"steps": "spgd_steps", "restarts": "spgd_restarts"}, gradients=True),
    "grid": Attack(grid_accuracy, flags={"method": "grid_method"}),
    "refined": Attack(refine, flags={"steps": "refine_steps"}, inputs={"grid": "grid"}, gradients=True),
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

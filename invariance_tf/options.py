"""Options dataclasses whose fields are command-line flags: how a field declares its flag, and their checks.

`ExperimentConfig` (`trainers.fit`), `tuning.SearchOptions` (`trainers.search`) and
`evaluation.options.EvaluateOptions` (`trainers.evaluate`) declare every field with
`option`: its default, its flag's help and, for an enum-like field, its
choices. `invariance_tf.flags` generates the absl flags from these fields; each
dataclass's `validate` passes its table of rules to `check`, whose one-line
error names the bad value as the flag that sets it. `Naming` writes a value
as a flag or as a Python argument, so that one table of rules (the model's,
`model.check_arguments`; the adversaries', `adversaries.check_arguments`)
gives the library's errors and the command lines'.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

_T = TypeVar("_T")


def option(default: _T, help: str, choices: Sequence[str] | None = None) -> _T:
    """A dataclass field that is also a flag of the same name, default and help; typed as its value.

    A field with `choices` takes only those values (None too when that is its default).
    """
    metadata = {"help": help} if choices is None else {"help": help, "choices": tuple(choices)}
    return dataclasses.field(default=default, metadata=metadata)


def is_count(value: Any, minimum: int = 1) -> bool:
    """Whether `value` is a whole number (an int or NumPy integer, not a bool) of at least `minimum`.

    The one test of "an integer >= 1" (or >= 0 with `minimum=0`): 1.5 and True are not counts.
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def flag_items(values: Sequence) -> list[str]:
    """A sequence as the items of a list flag: numbers as `%g` (3.0 is "3"), anything else as `str`."""
    return [f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in values]


def flag_value(value: Any) -> str:
    """A field's value (or its JSON record) as a flag writes it: sequences comma-separated, booleans lower-case."""
    if isinstance(value, (tuple, list)):
        return ",".join(flag_items(value))
    return str(value).lower() if isinstance(value, bool) else str(value)


class Naming:
    """How an error names values: as the flags that set them (`--ce_on=rob`) or as Python arguments (`ce_on='rob'`).

    A flag is written as on a command line (`flag_value`), a true boolean as `--name` and None as `none`; an argument
    as `name=repr(value)`. Values not given are those of `values`, the mapping of names to values being checked.
    `flag_names` maps the names whose flags are named otherwise to those flags (`{"steps": "spgd_steps"}`).
    """

    def __init__(self, values: Mapping[str, Any], flags: bool = False, flag_names: Mapping[str, str] | None = None):
        self.values = values
        self.flags = flags
        self.flag_names = dict(flag_names or {})

    def __call__(self, name: str, value: Any = dataclasses.MISSING) -> str:
        """`name` with `value` (by default its value in `values`): `--name=value` or `name=value`."""
        value = self.values[name] if value is dataclasses.MISSING else value
        if self.flags and value is True:
            return self.name(name)
        return f"{self.name(name)}={self.value(value)}"

    def name(self, name: str) -> str:
        """`--flag` (the flag that sets `name`) or `name`."""
        return f"--{self.flag_names.get(name, name)}" if self.flags else name

    def value(self, value: Any) -> str:
        """A value as a flag writes it or as its repr."""
        if not self.flags:
            return repr(value)
        return "none" if value is None else flag_value(value)

    def choices(self, values: Iterable) -> str:
        """Valid values as a list: `[None, 'random']` as arguments, `['none', 'random']` as flags."""
        return str([self.value(v) for v in values] if self.flags else list(values))

    def invalid(self, name: str, rule: str) -> str:
        """The error of a value that breaks `rule`: `<name and value> is invalid: <rule>`."""
        return f"{self(name)} is invalid: {rule}"


Rule = tuple[str, Callable[[Any], bool], str]
"""`(name, ok, rule)`: the value named `name` is valid if `ok(value)`; its error states `rule` ("must be >= 1")."""


def check_values(named: Naming, rules: Iterable[Rule]) -> None:
    """Raises ValueError `<name and value> is invalid: <rule>` for the first of `rules` that a value of `named` breaks.

    Rules on names without a value in `named.values` are skipped: a table of rules serves any subset of its names.
    """
    for name, ok, rule in rules:
        if name in named.values and not ok(named.values[name]):
            raise ValueError(named.invalid(name, rule))


def check(options: Any, rules: Iterable[tuple[str, bool, str]]) -> None:
    """Raises ValueError `--<name>=<value> is invalid: <rule>` naming the first bad field of `options`.

    Fields outside their choices come first, then the first `(name, ok, rule)` of `rules` that is not ok.
    """
    named = Naming({field.name: getattr(options, field.name) for field in dataclasses.fields(options)}, flags=True)
    for field in dataclasses.fields(options):
        choices, value = field.metadata.get("choices"), named.values[field.name]
        if choices is not None and value not in choices and not (value is None and field.default is None):
            raise ValueError(named.invalid(field.name, f"valid values are {list(choices)}"))
    for name, ok, rule in rules:
        if not ok:
            raise ValueError(named.invalid(name, rule))

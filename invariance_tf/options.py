"""Options dataclasses whose fields are command-line flags: how a field declares its flag, and their checks.

`ExperimentConfig` (`trainers.fit`), `tuning.SearchOptions` (`tuning.search`) and
`evaluation.options.EvaluateOptions` (`trainers.evaluate`) declare every field with
`option`: its default, its flag's help and, for an enum-like field, its
choices. `trainers.flags` generates the absl flags from these fields; each
dataclass's `validate` passes its table of rules to `check`, whose one-line
error names the bad value as the flag that sets it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

_T = TypeVar("_T")


def option(default: _T, help: str, choices: Sequence[str] | None = None) -> _T:
    """A dataclass field that is also a flag of the same name, default and help; typed as its value.

    A field with `choices` takes only those values (None too when that is its default).
    """
    metadata = {"help": help} if choices is None else {"help": help, "choices": tuple(choices)}
    return dataclasses.field(default=default, metadata=metadata)


def flag_items(values: Sequence) -> list[str]:
    """A sequence as the items of a list flag: numbers as `%g` (3.0 is "3"), anything else as `str`."""
    return [f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in values]


def flag_value(value: Any) -> str:
    """A field's value (or its JSON record) as a flag writes it: sequences comma-separated, booleans lower-case."""
    if isinstance(value, (tuple, list)):
        return ",".join(flag_items(value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def check(options: Any, rules: Iterable[tuple[str, bool, str]]) -> None:
    """Raises ValueError `--<name>=<value> is invalid: <rule>` naming the first bad field of `options`.

    Fields outside their choices come first, then the first `(name, ok, rule)` of `rules` that is not ok.
    """
    for field in dataclasses.fields(options):
        choices, value = field.metadata.get("choices"), getattr(options, field.name)
        if choices is not None and value not in choices and not (value is None and field.default is None):
            raise ValueError(f"--{field.name}={flag_value(value)} is invalid: valid values are {list(choices)}")
    for name, ok, rule in rules:
        if not ok:
            raise ValueError(f"--{name}={flag_value(getattr(options, name))} is invalid: {rule}")

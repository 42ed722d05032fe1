"""absl flags generated from options dataclasses, the one way the command-line tools define their flags.

A dataclass whose fields are declared with `invariance_tf.options.option` (`ExperimentConfig` for
`trainers.fit`, `tuning.SearchOptions` for `trainers.search`, `evaluation.options.EvaluateOptions` for
`trainers.evaluate`, `export.ExportOptions` for `trainers.export`, the benchmarks' options) gets one flag per field
from `define_flags` and is rebuilt from the parsed flags by `from_flags`. Every command imports it from here, the
library, so that none reaches into another command's package.
"""

from __future__ import annotations

import dataclasses
import shlex
import types
import typing
from typing import TypeVar

from absl import flags

from invariance_tf.experiment_config import ExperimentConfig, flag_arguments
from invariance_tf.options import flag_items

_T = TypeVar("_T")
_SCALARS = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}
_ITEMS = (int, float, str)


def _flag_types(options_type: type) -> dict[str, tuple[type, type | None]]:
    """Per field of `options_type`: its type without Optional, and its items' type if it is a tuple or list."""
    hints, result = typing.get_type_hints(options_type), {}
    for field in dataclasses.fields(options_type):
        annotation = hints[field.name]
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
            annotation = next(arg for arg in args if arg is not type(None))
        origin = typing.get_origin(annotation) or annotation
        item = typing.get_args(annotation)[0] if origin in (tuple, list) else None
        if origin not in (*_SCALARS, tuple, list) or item not in (None, *_ITEMS):
            raise TypeError(
                f"{options_type.__name__}.{field.name} has no flag type: {annotation}; valid types are "
                f"{[t.__name__ for t in _SCALARS]}, a tuple or list of {[t.__name__ for t in _ITEMS]}, "
                "each optional"
            )
        result[field.name] = origin, item
    return result


def define_flags(options_type: type, flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines one flag per field of the dataclass `options_type`, with the field's name, default and help.

    A field with choices becomes an enum flag (absl lists them in `--help` and refuses others); a tuple or list
    field a comma-separated list flag; bool, int, float and str fields, optional or not, flags of their type.
    """
    kinds = _flag_types(options_type)
    for field in dataclasses.fields(options_type):
        kind, item = kinds[field.name]
        default, help_text, choices = field.default, field.metadata["help"], field.metadata.get("choices")
        if choices is not None:
            flags.DEFINE_enum(field.name, default, list(choices), help_text, flag_values=flag_values)
        elif item is not None:
            items = None if default is None else flag_items(default)
            flags.DEFINE_list(field.name, items, help_text, flag_values=flag_values)
        else:
            _SCALARS[kind](field.name, default, help_text, flag_values=flag_values)


def from_flags(options_type: type[_T], flag_values: flags.FlagValues = flags.FLAGS) -> _T:
    """The `options_type` the parsed flags describe; raises ValueError naming a list flag with a bad number."""
    values = {}
    for name, (kind, item) in _flag_types(options_type).items():
        value = flag_values[name].value
        if item is not None and value is not None:
            try:
                value = kind(item(text) for text in value)
            except ValueError:
                raise ValueError(f"--{name}={','.join(value)} is invalid: expected numbers") from None
        values[name] = value
    return options_type(**values)


def define_experiment_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The flags of `trainers.fit`, one per `ExperimentConfig` field."""
    define_flags(ExperimentConfig, flag_values)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> ExperimentConfig:
    """The `ExperimentConfig` the parsed `trainers.fit` flags describe."""
    return from_flags(ExperimentConfig, flag_values)


def command_line(config: ExperimentConfig, module: str = "trainers.fit") -> str:
    """The `python -m trainers.fit ...` command that reproduces `config`, shell-quoted so paths with spaces survive."""
    return shlex.join(["python", "-m", module, *flag_arguments(config)])

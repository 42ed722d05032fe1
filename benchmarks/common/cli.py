"""A benchmark's command line: the flags of its options dataclass, checked, under `python -m` or in this process.

Each benchmark declares its flags as a dataclass of `invariance_tf.options.option` fields with a `validate`
method, as `trainers.evaluate` does with `EvaluateOptions`; `invariance_tf.flags` makes the absl flags. `run` is the
`python -m` entry (absl's `app.run`, so `--help`, `--helpfull` and `--flagfile` work); `parse` reads flags in
this process on flag values of its own, so that several benchmarks, and their tests, share one process. A bad
flag exits with one line naming it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from absl import app, flags

from invariance_tf import flags as cli_flags

_T = TypeVar("_T")


def parse(options_type: type[_T], argv: Sequence[str]) -> _T:
    """The checked `options_type` of the flags `argv` (no program name), parsed on flag values of their own."""
    values = flags.FlagValues()
    cli_flags.define_flags(options_type, values)
    try:
        arguments = values([options_type.__module__, *argv])
    except flags.Error as error:
        sys.exit(f"error: {error}")
    return _checked(options_type, values, arguments[1:])


def run(options_type: type[_T], main: Callable[[_T], None]) -> None:
    """`main` on the options of this process's command line, under absl's `app.run`; `--help` lists the flags."""
    cli_flags.define_flags(options_type)
    # absl's --help lists the key flags of the main module, which it names by sys.argv[0].
    for field in dataclasses.fields(options_type):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[field.name])
    app.run(lambda argv: main(_checked(options_type, flags.FLAGS, argv[1:])))


def check_required(options: object, *names: str) -> None:
    """Raises ValueError `--<name> is required` (with the valid values of a flag with choices) for a missing one."""
    for field in dataclasses.fields(options):
        if field.name in names and getattr(options, field.name) is None:
            choices = field.metadata.get("choices")
            raise ValueError(f"--{field.name} is required" + (f": valid values are {list(choices)}" if choices else ""))


def seeds_rule(seeds: Sequence[int]) -> tuple[str, bool, str]:
    """The `invariance_tf.options.check` rule of a `--seeds` flag: distinct integers >= 0."""
    return "seeds", min(seeds, default=0) >= 0 and len(set(seeds)) == len(seeds), "must be distinct integers >= 0"


def names_rule(name: str, values: Sequence[str], valid: Sequence[str]) -> tuple[str, bool, str]:
    """The `check` rule of a list flag `--<name>` of names: each among `valid`, none twice."""
    unknown = [value for value in values if value not in valid]
    repeated = sorted({value for value in values if values.count(value) > 1})
    rule = f"unknown {unknown}; valid {name} are {list(valid)}" if unknown else f"repeats {repeated}"
    return name, not unknown and not repeated, rule


def _checked(options_type: type[_T], values: flags.FlagValues, arguments: Sequence[str]) -> _T:
    """The `options_type` of the parsed `values`, validated; exits with one line on a bad flag, argument or path."""
    try:
        if arguments:
            raise ValueError(f"unexpected arguments {list(arguments)}: every option is a --flag")
        options = cli_flags.from_flags(options_type, values)
        options.validate()
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    return options

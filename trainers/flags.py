"""absl flags generated from `ExperimentConfig`, shared by `trainers.fit` and `tuning.search`."""

from __future__ import annotations

import dataclasses
import shlex

from absl import flags

from invariance_tf.experiment import ExperimentConfig, flag_arguments


def define_experiment_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines one flag per `ExperimentConfig` field, with its default and help."""
    for field in dataclasses.fields(ExperimentConfig):
        default, help_text = field.default, field.metadata["help"]
        if isinstance(default, bool):
            flags.DEFINE_bool(field.name, default, help_text, flag_values=flag_values)
        elif isinstance(default, int):
            flags.DEFINE_integer(field.name, default, help_text, flag_values=flag_values)
        elif isinstance(default, float):
            flags.DEFINE_float(field.name, default, help_text, flag_values=flag_values)
        elif isinstance(default, tuple):
            flags.DEFINE_list(field.name, [f"{v:g}" for v in default], help_text, flag_values=flag_values)
        else:
            flags.DEFINE_string(field.name, default, help_text, flag_values=flag_values)


def config_from_flags(values: flags.FlagValues = flags.FLAGS) -> ExperimentConfig:
    """The `ExperimentConfig` the parsed flags describe; a malformed number raises ValueError naming the flag."""
    kwargs = {}
    for field in dataclasses.fields(ExperimentConfig):
        value = values[field.name].value
        if isinstance(field.default, tuple):
            try:
                value = tuple(float(v) for v in value)
            except ValueError:
                raise ValueError(f"--{field.name}={','.join(value)} is invalid: expected numbers") from None
        kwargs[field.name] = value
    return ExperimentConfig(**kwargs)


def command_line(config: ExperimentConfig, module: str = "trainers.fit") -> str:
    """The `python -m trainers.fit ...` command that reproduces `config`, shell-quoted so paths with spaces survive."""
    return shlex.join(["python", "-m", module, *flag_arguments(config)])

"""The kinds of model file (`resolve`), and the input convention their owners wrote them for (`ConventionOptions`).

`resolve` tells the kinds apart: a `trainers.fit` run folder (its `model.keras` and the input convention its
config.json records), a `.keras` file, a SavedModel folder (`saved_model.pb`) and an `.onnx` file.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from invariance_tf.layers.input_convention import INPUT_RANGES, PER_CHANNEL, InputConvention, fits_channels
from invariance_tf.options import flag_value, option

KINDS = (
    "a trainers.fit run folder (with model.keras)",
    "a .keras file",
    "a SavedModel folder (with saved_model.pb)",
    "an .onnx file",
)


@dataclasses.dataclass
class ConventionOptions:
    """The flags `--input_range`, `--mean` and `--std`: the input a classifier's owner wrote it for.

    `trainers.evaluate` (`EvaluateOptions`) and `trainers.fit` (`ExperimentConfig`) both inherit them.
    """

    input_range: str = option("0-255", "pixel scale the model expects", choices=INPUT_RANGES)
    mean: tuple[float, ...] = option(
        (),
        "per-channel mean the model expects subtracted, in the --input_range scale: 1 value or one per channel "
        "(empty = none); model input = (pixels_in_range - mean) / std",
    )
    std: tuple[float, ...] = option(
        (),
        "per-channel standard deviation the model expects pixels divided by (after --mean): 1 value or one per "
        "channel, each > 0 (empty = none)",
    )

    def convention(self) -> InputConvention:
        """The `InputConvention` layer these flags describe."""
        return InputConvention(self.input_range, self.mean, self.std)

    def given_flags(self) -> list[str]:
        """The names of these flags set to other than raw pixels (0-255, no mean, no std)."""
        defaults = {"input_range": "0-255", "mean": (), "std": ()}
        return [name for name, default in defaults.items() if (getattr(self, name) or ()) != default]

    def convention_rules(self, channels: int | None = None) -> list[tuple[str, bool, str]]:
        """`options.check` rules: finite means, stds > 0 and, with the images' `channels`, `fits_channels`."""
        not_finite = [value for value in self.mean or () if not math.isfinite(value)]
        not_positive = [value for value in self.std or () if not (math.isfinite(value) and value > 0)]
        rules = [
            ("mean", not not_finite, f"{flag_value(not_finite[:1])} is not a finite number"),
            ("std", not not_positive, f"{flag_value(not_positive[:1])} is not a number > 0"),
        ]
        if channels is not None:
            rules += [
                (name, fits_channels(values, channels), f"{PER_CHANNEL.format(channels=channels)}; got {len(values)}")
                for name, values in (("mean", self.mean), ("std", self.std))
            ]
        return rules


@dataclasses.dataclass(frozen=True)
class Source:
    """A classifier on disk, as `resolve` finds it.

    Attributes:
        kind: "run", "keras", "saved_model" or "onnx".
        path: the file or folder that holds the model (a run folder's model.keras).
        recorded: for a run folder, the `InputConvention` its config.json records; else None.
        config: for a run folder with a config.json, what it records (the `trainers.fit` flags, by name); else None.
    """

    kind: str
    path: Path
    recorded: InputConvention | None = None
    config: dict | None = None

    def convention(self, given: InputConvention, flag: str) -> InputConvention:
        """The input convention of the model: a run's recorded one, else `given` (the flags).

        Flags that set another convention than a run's recorded one are refused (ValueError naming both).
        """
        if self.recorded is None:
            return given
        recorded = self.recorded
        if not given.is_identity and given.settings() != recorded.settings():
            raise ValueError(
                f"{flag}={self.path.parent} records the input convention {recorded.settings()}; the flags give "
                f"{given.settings()}: drop --input_range, --mean and --std (a run's own convention is used)"
            )
        return recorded


def resolve(path: str | Path, flag: str = "--init_model") -> Source:
    """The classifier `path` names; raises ValueError (one line, naming `flag`) when it is none of `KINDS`."""
    path = Path(path)
    if path.is_dir() and (path / "model.keras").is_file():
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else None
        return Source("run", path / "model.keras", recorded_convention(path), config)
    if path.is_file() and path.suffix in (".keras", ".onnx"):
        return Source(path.suffix[1:], path)
    if (path / "saved_model.pb").is_file():
        return Source("saved_model", path)
    reason = "does not exist" if not path.exists() else "is none of the kinds it can be"
    raise ValueError(f"{flag}={path} {reason}: give {', '.join(KINDS[:-1])} or {KINDS[-1]}")


def recorded_convention(run_dir: Path) -> InputConvention:
    """The `InputConvention` a run folder's config.json records (raw pixels for runs older than the flags)."""
    config = run_dir / "config.json"
    recorded = json.loads(config.read_text()) if config.is_file() else {}
    return InputConvention(recorded.get("input_range", "0-255"), recorded.get("mean"), recorded.get("std"))

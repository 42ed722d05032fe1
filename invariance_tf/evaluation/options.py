"""`EvaluateOptions`: what `trainers.evaluate` is asked to do, one field per flag, and its checks.

The attacks' own options are flags too, each declared by its attack (`attacks.Option`): `attack_options_type`
gathers them into a dataclass for the flags, and `attacks.option_values` checks them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from invariance_tf import data, transforms
from invariance_tf.evaluation import attacks
from invariance_tf.evaluation.attacks import ATTACKS
from invariance_tf.evaluation.symmetry import SYMMETRIES
from invariance_tf.model_files import LAYOUTS, ConventionOptions
from invariance_tf.options import check, flag_value, option


@dataclasses.dataclass
class EvaluateOptions(ConventionOptions):
    """An evaluation of one classifier under attacks; field names equal the `trainers.evaluate` flag names.

    The input convention flags (`--input_range`, `--mean`, `--std`) are `ConventionOptions`, shared with
    `trainers.fit --init_model`; a run's recorded convention is used for its model. The attacks' own flags
    (`--k`, `--spgd_steps`, ...) are theirs (`attack_options_type`).
    """

    model_dir: str | None = option(None, "output directory of trainers.fit (model.keras, config.json)")
    model: str | None = option(
        None,
        "a trainers.fit run folder (its model.keras, in the convention the run records), a Keras .keras file, a "
        "SavedModel folder (serving_default signature) or an .onnx file (run by onnxruntime)",
    )
    attack: tuple[str, ...] = option(("clean", "grid"), f"comma-separated attacks among {list(ATTACKS)}")
    examples: int = option(1000, "test examples to evaluate, a class-balanced subset (0 = the whole test split)")
    data_dir: str | None = option(
        None,
        "ImageFolder root <dir>/test/<class>/<image>, or a TFDS name "
        f"({', '.join(data.DATASETS)}); with --model_dir, default the run's",
    )
    dataset: str = option("cifar10", f"with --model: which dataset an ImageFolder holds {list(data.DATASETS)}")
    input_layout: str = option(
        "auto", "axis order an ONNX model takes: auto (detected from its input shape) | nhwc | nchw", choices=LAYOUTS
    )
    output_dir: str | None = option(None, "report folder (default: --model_dir, or <model>_evaluation beside --model)")
    batch_size: int = option(0, "images per model call, bounds memory (0 = auto: 128 on CPU, 1024 on GPU)")
    chunk_size: int = option(500, "examples per saved chunk (resume granularity)")
    plot: bool = option(
        False, "with grid in --attack: run the brute grid and write robustness_landscape.png and failures.png"
    )
    failures: int = option(16, "with --plot: grid failures shown in failures.png, the most negative margins")
    seed: int = option(0, "seed of the random attacks and of the test subset")
    resampling: str = option(
        transforms.EVALUATION_RESAMPLING,
        "how transformed images are resampled: reference (the paper's protocol: the reference code's pad, rotate, "
        "translate, crop) | composed (one bilinear resampling, a more lenient attack)",
        choices=transforms.RESAMPLINGS,
    )
    symmetry: str = option(
        "",
        "with --model_dir or a .keras --model: also report how far the logits move under the exact symmetries of "
        "this group (p4: quarter-turns, p4m: and flips) of the test images, in evaluation.json's 'symmetry' "
        "(empty = not)",
        choices=("", *SYMMETRIES),
    )
    symmetry_side: int = option(
        0,
        "with --symmetry: zero-pad the images to this side first (0 = as they are; 33 makes a stride-2 "
        "G-ResNet exactly invariant, 32 a G-ResNet-9)",
    )

    @property
    def onnx(self) -> bool:
        """Whether `--model` is an ONNX file, run by onnxruntime without gradients."""
        return Path(self.model or "").suffix == ".onnx"

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag, before anything is loaded."""
        if (self.model_dir is None) == (self.model is None):
            raise ValueError("give exactly one of --model_dir and --model")
        for name in ("model.keras", "config.json"):
            if self.model_dir is not None and not (Path(self.model_dir) / name).is_file():
                raise ValueError(f"--model_dir={self.model_dir} has no {name}")
        if self.model is not None and not Path(self.model).exists():
            raise ValueError(f"--model={self.model} does not exist")
        unknown = [name for name in self.attack if name not in ATTACKS]
        if unknown:
            raise ValueError(
                f"--attack={flag_value(self.attack)}: unknown {unknown}; valid attacks are {list(ATTACKS)}"
            )
        check(
            self,
            [
                ("dataset", self.dataset in data.DATASETS, f"valid datasets are {list(data.DATASETS)}"),
                ("examples", self.examples >= 0, "must be >= 0"),
                ("batch_size", self.batch_size >= 0, "must be >= 0 (0 = auto)"),
                ("chunk_size", self.chunk_size >= 1, "must be >= 1"),
                ("failures", self.failures >= 1, "must be >= 1"),
                *self.convention_rules(),
            ],
        )
        if self.symmetry and self.model_dir is None and Path(self.model or "").suffix != ".keras":
            raise ValueError(
                f"--symmetry={self.symmetry} needs --model_dir or a Keras file (.keras) as --model; "
                f"got --model={self.model}"
            )
        if self.symmetry_side < 0:
            raise ValueError(f"--symmetry_side must be >= 0; got {self.symmetry_side}")
        if self.plot and "grid" not in self.attack:
            raise ValueError(f"--plot needs grid in --attack={flag_value(self.attack)}")
        gradient = [name for name in self.attack if ATTACKS[name].gradients]
        if self.onnx and gradient:
            gradient_free = [name for name, attack in ATTACKS.items() if not attack.gradients]
            raise ValueError(
                f"--attack={flag_value(self.attack)}: gradient-based {gradient} cannot run on the ONNX "
                f"model --model={self.model} (onnxruntime gives no gradients); valid attacks for it "
                f"are {gradient_free}"
            )
        if self.input_layout == "nchw" and not self.onnx:
            raise ValueError(
                "--input_layout=nchw is for ONNX models (--model=<file>.onnx); Keras and SavedModel "
                "classifiers take nhwc images"
            )

    def validate_channels(self, channels: int) -> None:
        """Raises ValueError unless --mean and --std, where given, are 1 value or one per channel of the images.

        `channels`, the images' number of channels, is known once the data source is.
        """
        check(self, self.convention_rules(channels))


def attack_options_type() -> type:
    """A dataclass with one `option` field per option of the registered attacks (`attacks.options`).

    `trainers.evaluate` defines its attack flags from it, so an attack registered before that command's flags are
    defined brings its own flags.
    """
    fields = [
        (name, type(entry.default), option(entry.default, entry.help, entry.choices))
        for name, entry in attacks.options().items()
    ]
    return dataclasses.make_dataclass("AttackOptions", fields)

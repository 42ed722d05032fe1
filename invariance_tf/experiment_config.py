"""`ExperimentConfig`: one training run as a flat configuration, whose fields are `trainers.fit`'s flags.

Its fields keep the names and defaults a run's config.json records (`resume` compares them to resume a run).
`validate` checks a config before any data is read; the properties resolve the fields where 0 or an empty string
means "auto" or "all", so that callers never restate that rule. `flag_arguments` writes a config as flags.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from invariance_tf import adversaries, data, distribute, evaluation, networks, precision, transforms
from invariance_tf.layers.gconv import GROUP_ORDERS
from invariance_tf.model import CHECKED_ARGUMENTS, check_arguments
from invariance_tf.model_files import ConventionOptions
from invariance_tf.networks import pretrained
from invariance_tf.networks.g_resnet import HEADS
from invariance_tf.options import check, flag_value, is_count, option

ADVERSARY_CHOICES = ("none", *sorted(adversaries.ADVERSARIES))
AUGMENT_CHOICES = ("auto", "on", "flip", "off")
LR_SCHEDULES = ("step", "onecycle")
GROUPS = tuple(sorted(GROUP_ORDERS))
AT_LEAST_ONE = ("resnet_n", "width", "epochs", "batch_size", "eval_k", "eval_chunk_size")
"""Count fields (`options.is_count`) that must be >= 1."""
ZERO_MEANS = {
    "g_width": "the paper's widths",
    "train_examples": "all",
    "validation_examples": "none",
    "test_examples": "all",
    "grid_examples": "all test examples",
    "train_eval_examples": "none",
    "eval_every": "never",
    "eval_batch_size": "auto",
}
"""Count fields that may be 0, and what 0 means."""


@dataclasses.dataclass
class ExperimentConfig(ConventionOptions):
    """A training run. Field names equal the `trainers.fit` flag names (see its `--help`).

    The input convention flags (`--input_range`, `--mean`, `--std`, `model_files.ConventionOptions`, shared with
    `trainers.evaluate`) describe the input an `--init_model` takes.
    """

    dataset: str = option("cifar10", "the dataset (invariance_tf.data)", choices=sorted(data.DATASETS))
    data_dir: str = option("", "local ImageFolder copy <dir>/<split>/<class>/<image>; empty = TFDS")
    network: str = option(
        "resnet", "network architecture (see invariance_tf.networks)", choices=sorted(networks.NETWORKS)
    )
    resnet_n: int = option(5, "ResNet blocks per stage: depth 6n+2 (5 = paper, 1 = fast CPU)")
    reference_resnet: bool = option(
        False,
        "--network=resnet with the reference code's conv init, batch-norm "
        "epsilon 1e-3 and first-block shortcut (no effect on other networks)",
    )
    width: int = option(
        16,
        "ResNet-9 base width: stages of width x 1, 2, 4, 8 (--network=resnet9; --network=g_resnet9 matches "
        "its parameters with G-channels round(width / sqrt(|G|)))",
    )
    g_depth: int = option(44, "G-ResNet depth 6n+2 (--network=g_resnet; 44 = the paper's GRN row)")
    g_width: int = option(
        0, "G-ResNet G-channels of the first stage, doubled per stage (0 = the paper's parameter-matched widths)"
    )
    group: str = option(
        "p4",
        "G-network symmetry group (g_resnet, g_resnet9): p4 (rotations by 90 deg) | p4m (and mirrors)",
        choices=GROUPS,
    )
    g_head: str = option(
        "invariant",
        "G-network head: invariant (max over the group axis, logits invariant to the group) | flatten (Cohen & "
        "Welling's: the linear layer sees channels x group elements)",
        choices=HEADS,
    )
    init_model: str = option(
        "",
        "start from this trained classifier (robust fine-tuning) instead of a new "
        "--network: a trainers.fit run folder, a .keras file or a SavedModel folder, "
        "taking the input --input_range, --mean and --std describe (see docs/finetuning.md); empty = a new "
        "network",
    )
    adversary: str = option("none", "choice of x~ (none: standard training)", choices=ADVERSARY_CHOICES)
    k: int = option(10, "candidates of worst_of_k (1 = random)")
    adversary_objective: str = option("ce", "what the adversary maximises: ce | kl | l2")
    ce_adversary_objective: str = option(
        "same",
        "what the CE term's x~ maximises: same (the x~ of h) | ce (its "
        "own worst case w.r.t. CE when --adversary_objective is h: x, "
        "x~ of h and x~ of CE per step, the reference code's A.T.+KL; "
        "no effect with --adversary=random, --k=1, "
        "--adversary_objective=ce or --ce_on=nat)",
    )
    shared_candidates: bool = option(
        False,
        "worst_of_k with two objectives (--ce_adversary_objective=ce): pick "
        "both x~ from the same k draws (one search, cheaper) instead of two "
        "independent searches (the reference code)",
    )
    spgd_steps: int = option(5, "S-PGD sign-gradient steps")
    limits: tuple[float, float, float] = option(
        transforms.DEFAULT_LIMITS,
        "transformation limits dx,dy,angle (pixels, pixels, degrees) of the adversary and of the evaluation's attacks",
    )
    adversary_limits: tuple[float, ...] = option(
        (),
        "the training adversary's limits dx,dy,angle when they "
        "differ from --limits (empty = --limits), e.g. 4,4,0 for "
        "the reference's std row: random +-4 px translations",
    )
    resampling: str = option(
        "composed",
        "how transformed images are resampled, in training, adversary and "
        "evaluation: composed (one bilinear resampling) | reference (the "
        "reference code's pad to 2x, rotate, translate, crop: two)",
    )
    ce_on: str = option("nat", "cross-entropy on the natural (nat), transformed (rob) or both (mix) batches")
    reference_half_batch_ce: bool = option(
        False,
        "the reference A.T. config's quirk, not the method: with "
        "--ce_on=rob the CE is on the second half of the batch only",
    )
    h: str = option("kl", "invariance semimetric: kl | l2")
    lambda_reg: float = option(0.0, "weight of the invariance penalty h (>= 0; 0 = plain D.A./A.T.)")
    epochs: int = option(100, "training epochs")
    batch_size: int = option(128, "original examples per step (regularised rows add as many transformed)")
    lr: float = option(0.1, "SGD learning rate: the initial one (step) or the peak (onecycle)")
    lr_schedule: str = option(
        "step",
        "step: lr / 10 at 50% and 75% of training (the paper) | onecycle: linear "
        "warm-up to lr over --warmup_fraction of training, then linear decay to 0",
        choices=LR_SCHEDULES,
    )
    warmup_fraction: float = option(0.2, "fraction of training steps spent warming up (--lr_schedule=onecycle)")
    momentum: float = option(0.9, "SGD momentum")
    nesterov: bool = option(False, "Nesterov momentum")
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy term, in [0, 1)")
    precision: str = option(
        "float32",
        "Keras dtype policy: float32 | mixed_bfloat16 | mixed_float16 | auto "
        "(mixed_bfloat16 where the hardware computes bfloat16 natively, e.g. "
        "AVX512_BF16 or AMX, float32 otherwise)",
        choices=precision.CHOICES,
    )
    weight_decay: float = option(2e-4, "coefficient of 1/2 ||w||^2 on every kernel")
    augment: str = option(
        "auto",
        "augmentation of the training images before any transformation: auto "
        "(crop+flip on CIFAR, none on SVHN) | on (zero-pad 4, random crop, flip) | "
        "flip (left-right flips only, the reference code's) | off",
        choices=AUGMENT_CHOICES,
    )
    train_examples: int = option(0, "training examples to use (0 = all minus validation)")
    validation_examples: int = option(0, "examples held out of the training split for validation")
    test_examples: int = option(0, "test examples for the final metrics (0 = all)")
    grid_examples: int = option(0, "test examples for the final grid attack (0 = all test examples)")
    grid_subset: str = option(
        "",
        "JSON file naming the test images of the final grid attack (its 'indices': positions in the whole test "
        "split in loader order, e.g. a pre-registered confirmation set); empty = --grid_examples drawn with --seed",
    )
    eval_resampling: str = option(
        "reference",
        "how the final evaluation and the --eval_every validation resample transformed images: reference (the "
        "paper's protocol: pad, rotate, translate, crop) | composed (one bilinear resampling, a more lenient attack)",
        choices=transforms.RESAMPLINGS,
    )
    train_eval_examples: int = option(
        0,
        "training images (of this run's own) graded after training, in inference mode, clean and worst-of-"
        "--eval_k, to show the run's regime beside its test accuracies (0 = none)",
    )
    eval_report: bool = option(
        False,
        "also grade the grid images with the report attack (per class, per-image invariance and KL, nested boxes, "
        "worst-of-k's overestimate: evaluation.failure_report), which runs the grid brute instead of early exit",
    )
    eval_every: int = option(0, "epochs between worst-of-k validation evaluations (0 = never)")
    eval_k: int = option(10, "k of the worst-of-k evaluation")
    eval_chunk_size: int = option(
        500, "grid examples per saved chunk of the final evaluation (a killed evaluation resumes from its saved chunks)"
    )
    eval_batch_size: int = option(
        0, "images per model call during evaluation, bounds memory (0 = auto: 128 on CPU, 1024 on GPU)"
    )
    output_dir: str = option("runs/default", "where checkpoints, logs, model.keras and metrics.json go")
    seed: int = option(0, "seed of data order, initialisation and adversary draws")
    deterministic: bool = option(False, "make TF ops deterministic (with --seed: identical reruns; slower)")
    overwrite: bool = option(False, "train again into an --output_dir that holds a finished run")
    strategy: str = option(
        "auto",
        "tf.distribute strategy: auto (multi_worker if TF_CONFIG is set) | default | mirrored | multi_worker",
        choices=distribute.STRATEGIES,
    )
    jit_compile: bool = option(
        False,
        "compile the whole train step with XLA, any adversary (off: faster on CPUs, docs/performance.md; on a GPU "
        "time both with benchmarks.device_report)",
    )
    verbose: int = option(1, "0 = silent, 1 = progress bars, 2 = one line per epoch")

    def validate(self) -> None:
        """Raises ValueError naming the first bad field as its flag, before any expensive work.

        Enum-like fields take their `choices`; the fields that are the adversary's arguments (the resampling and
        objective among them) follow its rules, `adversaries.check_arguments`, whatever the adversary; those that
        are `InvarianceModel` arguments (`--ce_on`, `--h`, ...) follow the model's, `model.check_arguments`: one
        statement of each rule, in the library's names and in the flags'.
        """
        check(self, [*self._count_rules(), *self._rules()])
        adversaries.check_arguments(
            {
                "limits": self.limits,
                "resampling": self.resampling,
                "objective": self.adversary_objective,
                "k": self.k,
                "steps": self.spgd_steps,
            },
            flags=True,
            flag_names={"objective": "adversary_objective", "steps": "spgd_steps"},
        )
        arguments = {name: getattr(self, name) for name in CHECKED_ARGUMENTS}
        check_arguments({**arguments, "adversary": self.adversary_name}, flags=True)
        if self.init_model:
            pretrained.trainable_source(self.init_model)
        if self.eval_every and not self.validation_examples:
            raise ValueError(f"--eval_every={self.eval_every} needs --validation_examples > 0")
        data.validate_source(self.dataset, self.data_root)

    def _count_rules(self) -> list[tuple[str, bool, str]]:
        """The rules of the count fields: `AT_LEAST_ONE` and `ZERO_MEANS`."""
        return [
            *((name, is_count(getattr(self, name)), "must be >= 1") for name in AT_LEAST_ONE),
            *(
                (name, is_count(getattr(self, name), minimum=0), f"must be >= 0 (0 = {meaning})")
                for name, meaning in ZERO_MEANS.items()
            ),
        ]

    def _rules(self) -> list[tuple[str, bool, str]]:
        """The rules of the other fields, for `options.check`."""
        return [
            (
                "adversary_limits",
                not self.adversary_limits or transforms.are_limits(self.adversary_limits),
                f"must be empty (= --limits) or {transforms.VALID_LIMITS}",
            ),
            ("warmup_fraction", 0 <= self.warmup_fraction < 1, "must be in [0, 1)"),
            ("g_depth", self.g_depth >= 8 and (self.g_depth - 2) % 6 == 0, "must be 6n+2 with n >= 1"),
            ("lr", self.lr > 0, "must be > 0"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("grid_subset", not self.grid_subset or Path(self.grid_subset).is_file(), "must be an existing file"),
            (
                "grid_subset",
                not (self.grid_subset and self.grid_examples),
                f"names the grid images itself: drop --grid_examples={self.grid_examples}",
            ),
            *self.convention_rules(),
            (
                (self.given_flags() or ["input_range"])[0],
                bool(self.init_model) or not self.given_flags(),
                "describes the input of an --init_model; a new --network takes raw pixels (0-255)",
            ),
        ]

    @property
    def adversary_name(self) -> str | None:
        """`--adversary`, or None for standard training (`--adversary=none`)."""
        return None if self.adversary == "none" else self.adversary

    @property
    def training_limits(self) -> tuple[float, ...]:
        """The training adversary's limits dx, dy, angle: `--adversary_limits`, or `--limits` when it is empty."""
        return self.adversary_limits or self.limits

    @property
    def data_root(self) -> str | None:
        """`--data_dir` (an ImageFolder root or a TFDS name, `data.local_dir`), or None for TFDS when it is empty."""
        return self.data_dir or None

    @property
    def train_subset_size(self) -> int | None:
        """Examples drawn from the training split, validation ones included, or None for the whole split.

        `--train_examples` + `--validation_examples`; None when `--train_examples=0` (all).
        """
        return self.train_examples + self.validation_examples if self.train_examples else None

    @property
    def test_subset_size(self) -> int | None:
        """Test examples of the final metrics: `--test_examples`, or None for the whole test split when it is 0."""
        return self.test_examples or None

    @property
    def evaluation_batch_size(self) -> int:
        """Images per model call during evaluation: `--eval_batch_size`, or when it is 0 (auto) the device's default.

        The default is `evaluation.default_batch_size()`: 128 on a CPU, 1024 on a GPU.
        """
        return self.eval_batch_size or evaluation.default_batch_size()

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict) -> ExperimentConfig:
        """Inverse of `to_json` (as read back from a run's config.json)."""
        return cls(
            **{
                **values,
                "limits": tuple(values["limits"]),
                "adversary_limits": tuple(values.get("adversary_limits", ())),
                "mean": tuple(values.get("mean") or ()),
                "std": tuple(values.get("std") or ()),
            }
        )


def flag_arguments(config: ExperimentConfig) -> list[str]:
    """`--name=value` for every field of `config`: a flagfile's lines, or a command line's arguments."""
    return [f"--{field.name}={flag_value(getattr(config, field.name))}" for field in dataclasses.fields(config)]

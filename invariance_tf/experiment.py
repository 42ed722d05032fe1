"""One training run from a flat configuration: the library behind `trainers.fit` and `tuning.search`.

`ExperimentConfig` mirrors the trainer's flags one to one; `validate` checks it
before any data is read; `build_model` is the single place where a config
becomes a compiled `InvarianceModel`; `run` trains, evaluates and writes the
output directory.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from invariance_tf import (
    adversaries,
    callbacks,
    data,
    distribute,
    evaluation,
    files,
    networks,
    precision,
    report,
    schedules,
    transforms,
)
from invariance_tf.evaluation import final_metrics
from invariance_tf.layers.gconv import GROUP_ORDERS
from invariance_tf.model import CHECKED_ARGUMENTS, InvarianceModel, check_arguments
from invariance_tf.networks import cost, pretrained
from invariance_tf.networks.g_resnet import HEADS
from invariance_tf.options import check, flag_value, option

ADVERSARY_CHOICES = ("none", *sorted(adversaries.ADVERSARIES))
AUGMENT_CHOICES = ("auto", "on", "flip", "off")
LR_SCHEDULES = ("step", "onecycle")
GROUPS = tuple(sorted(GROUP_ORDERS))


@dataclasses.dataclass
class ExperimentConfig(pretrained.ConventionOptions):
    """A training run. Field names equal the `trainers.fit` flag names (see its `--help`).

    The input convention flags (`--input_range`, `--mean`, `--std`, `pretrained.ConventionOptions`, shared with
    `trainers.evaluate`) describe the input an `--init_model` takes.
    """

    dataset: str = option("cifar10", "cifar10 | cifar100 | svhn_cropped")
    data_dir: str = option("", "local ImageFolder copy <dir>/<split>/<class>/<image>; empty = TFDS")
    network: str = option("resnet", "network architecture (see invariance_tf.networks)")
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
        "p4", "G-network symmetry group (g_resnet, g_resnet9): p4 (rotations by 90 deg) | p4m (and mirrors)"
    )
    g_head: str = option(
        "invariant",
        "G-network head: invariant (max over the group axis, logits invariant to the group) | flatten (Cohen & "
        "Welling's: the linear layer sees channels x group elements)",
    )
    init_model: str = option(
        "",
        "start from this trained classifier (robust fine-tuning) instead of a new "
        "--network: a trainers.fit run folder, a .keras file or a SavedModel folder, "
        "taking the input --input_range, --mean and --std describe (see docs/finetuning.md); empty = a new "
        "network",
    )
    adversary: str = option("none", "choice of x~: none | random | worst_of_k | spgd")
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
    )
    weight_decay: float = option(2e-4, "coefficient of 1/2 ||w||^2 on every kernel")
    augment: str = option(
        "auto",
        "augmentation of the training images before any transformation: auto "
        "(crop+flip on CIFAR, none on SVHN) | on (zero-pad 4, random crop, flip) | "
        "flip (left-right flips only, the reference code's) | off",
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
        "auto", "tf.distribute strategy: auto (multi_worker if TF_CONFIG is set) | default | mirrored | multi_worker"
    )
    jit_compile: bool = option(
        False,
        "compile the whole train step with XLA, any adversary (off: faster on CPUs, docs/performance.md; on a GPU "
        "time both with benchmarks.device_report)",
    )
    verbose: int = option(1, "0 = silent, 1 = progress bars, 2 = one line per epoch")

    def validate(self) -> None:
        """Raises ValueError naming the first bad field as its flag, before any expensive work.

        The fields that are the adversary's arguments follow its rules, `adversaries.check_arguments`, whatever the
        adversary; those that are `InvarianceModel` arguments follow the model's, `model.check_arguments`.
        """
        checks = [
            ("dataset", self.dataset in data.DATASETS, f"valid datasets are {sorted(data.DATASETS)}"),
            ("network", self.network in networks.NETWORKS, f"valid networks are {sorted(networks.NETWORKS)}"),
            ("adversary", self.adversary in ADVERSARY_CHOICES, f"valid adversaries are {list(ADVERSARY_CHOICES)}"),
            ("augment", self.augment in AUGMENT_CHOICES, f"valid values are {list(AUGMENT_CHOICES)}"),
            ("strategy", self.strategy in distribute.STRATEGIES, f"valid strategies are {list(distribute.STRATEGIES)}"),
            (
                "adversary_limits",
                not self.adversary_limits or transforms.are_limits(self.adversary_limits),
                f"must be empty (= --limits) or {transforms.VALID_LIMITS}",
            ),
            ("resnet_n", self.resnet_n >= 1, "must be >= 1"),
            ("width", self.width >= 1, "must be >= 1"),
            ("lr_schedule", self.lr_schedule in LR_SCHEDULES, f"valid schedules are {list(LR_SCHEDULES)}"),
            ("warmup_fraction", 0 <= self.warmup_fraction < 1, "must be in [0, 1)"),
            ("precision", self.precision in precision.CHOICES, f"valid values are {list(precision.CHOICES)}"),
            ("g_depth", self.g_depth >= 8 and (self.g_depth - 2) % 6 == 0, "must be 6n+2 with n >= 1"),
            ("g_width", self.g_width >= 0, "must be >= 0 (0 = the paper's widths)"),
            ("group", self.group in GROUPS, f"valid groups are {list(GROUPS)}"),
            ("g_head", self.g_head in HEADS, f"valid heads are {list(HEADS)}"),
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("lr", self.lr > 0, "must be > 0"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("train_examples", self.train_examples >= 0, "must be >= 0 (0 = all)"),
            ("validation_examples", self.validation_examples >= 0, "must be >= 0"),
            ("test_examples", self.test_examples >= 0, "must be >= 0 (0 = all)"),
            ("grid_examples", self.grid_examples >= 0, "must be >= 0 (0 = all test examples)"),
            ("grid_subset", not self.grid_subset or Path(self.grid_subset).is_file(), "must be an existing file"),
            (
                "grid_subset",
                not (self.grid_subset and self.grid_examples),
                f"names the grid images itself: drop --grid_examples={self.grid_examples}",
            ),
            ("train_eval_examples", self.train_eval_examples >= 0, "must be >= 0 (0 = none)"),
            ("eval_every", self.eval_every >= 0, "must be >= 0 epochs (0 = never)"),
            ("eval_k", self.eval_k >= 1, "must be >= 1"),
            ("eval_chunk_size", self.eval_chunk_size >= 1, "must be >= 1"),
            ("eval_batch_size", self.eval_batch_size >= 0, "must be >= 0 (0 = auto)"),
            *self.convention_rules(),
            (
                (self.given_flags() or ["input_range"])[0],
                bool(self.init_model) or not self.given_flags(),
                "describes the input of an --init_model; a new --network takes raw pixels (0-255)",
            ),
        ]
        check(self, checks)
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
        check_arguments({**arguments, "adversary": None if self.adversary == "none" else self.adversary}, flags=True)
        if self.init_model:
            pretrained.trainable_source(self.init_model)
        if self.eval_every and not self.validation_examples:
            raise ValueError(f"--eval_every={self.eval_every} needs --validation_examples > 0")
        data.validate_source(self.dataset, self.data_dir or None)

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


def flag_list(changed: dict) -> str:
    """`changed` (flag name -> value) as flags, comma-separated, for error messages."""
    return ", ".join(f"--{name}={flag_value(value)}" for name, value in changed.items())


def build_adversary(config: ExperimentConfig) -> adversaries.Adversary | None:
    """The adversary choosing x~ for training, or None for standard training."""
    if config.adversary == "none":
        return None
    kwargs = {"limits": config.adversary_limits or config.limits, "resampling": config.resampling}
    if config.adversary == "worst_of_k":
        kwargs.update(k=config.k, objective=config.adversary_objective, shared_candidates=config.shared_candidates)
    elif config.adversary == "spgd":
        kwargs.update(steps=config.spgd_steps, objective=config.adversary_objective)
    return adversaries.get(config.adversary, **kwargs)


def build_network(config: ExperimentConfig, info: data.DatasetInfo) -> keras.Model:
    """The classifier f named by `--network` (logits), shaped for the dataset's images and classes."""
    kwargs = {"input_shape": info.image_shape, "num_classes": info.num_classes, "weight_decay": config.weight_decay}
    if config.network == "resnet":
        kwargs.update(n=config.resnet_n, reference_details=config.reference_resnet)
    elif config.network == "resnet9":
        kwargs["width"] = config.width
    elif config.network == "g_resnet9":
        kwargs.update(width=config.width, group=config.group, head=config.g_head)
    elif config.network == "g_resnet":
        kwargs.update(depth=config.g_depth, group=config.group, head=config.g_head)
        if config.g_width:
            kwargs["widths"] = (config.g_width, 2 * config.g_width, 4 * config.g_width)
    return networks.build(config.network, **kwargs)


def learning_rate_schedule(
    config: ExperimentConfig, steps_per_epoch: int
) -> keras.optimizers.schedules.LearningRateSchedule:
    """`--lr_schedule`: the paper's steps (`lr`, / 10 at 50% and again at 75% of training) or one cycle."""
    total = config.epochs * steps_per_epoch
    if config.lr_schedule == "onecycle":
        return schedules.OneCycle(config.lr, total, min(round(config.warmup_fraction * total), total - 1))
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [max(1, total // 2), max(2, (3 * total) // 4)], [config.lr, config.lr / 10, config.lr / 100]
    )


def initial_network(config: ExperimentConfig, info: data.DatasetInfo, policy: str) -> keras.Model:
    """The network a run starts from: `--init_model` loaded (and checked against the data) or a new `--network`.

    It takes raw pixels (0-255): an `--init_model` written for another input convention sits behind an
    `InputConvention` layer (`pretrained.load`). Its layers compute under the dtype policy `policy`.
    """
    if config.init_model:
        return pretrained.load(config.init_model, info.image_shape, info.num_classes, policy, config.convention())
    with networks.dtype_policy(policy):
        return build_network(config, info)


def build_model(
    config: ExperimentConfig,
    info: data.DatasetInfo,
    steps_per_epoch: int,
    policy: str | None = None,
    network: keras.Model | None = None,
) -> InvarianceModel:
    """The compiled regularised model for `config`: the one place flags become a model.

    It trains `network`, by default `initial_network`'s. Layers take `policy`, by default `--precision`
    resolved by `precision.resolve`, as their dtype policy; the global policy is restored afterwards.
    """
    policy = policy or precision.resolve(config.precision).policy
    network = network or initial_network(config, info, policy)
    with networks.dtype_policy(policy):
        model = InvarianceModel(
            network,
            adversary=build_adversary(config),
            ce_on=config.ce_on,
            h=config.h,
            lambda_reg=config.lambda_reg,
            label_smoothing=config.label_smoothing,
            seed=config.seed,
            ce_adversary_objective=config.ce_adversary_objective,
            reference_half_batch_ce=config.reference_half_batch_ce,
        )
    model.compile(
        optimizer=keras.optimizers.SGD(
            learning_rate_schedule(config, steps_per_epoch), momentum=config.momentum, nesterov=config.nesterov
        ),
        jit_compile=config.jit_compile,
    )
    return model


@dataclasses.dataclass
class Splits:
    """The data of one run: training, validation (may be empty) and test arrays, and the dataset info."""

    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    info: data.DatasetInfo
    test_positions: np.ndarray | None = None
    """Each test example's position in the whole test split (loader order); None: the whole split, in order."""
    test_split_size: int | None = None
    """Images in the whole test split; None: as many as `test` holds."""


def load_splits(config: ExperimentConfig) -> Splits:
    """The run's arrays, with `--validation_examples` held out of the training data.

    They are held out of a training subset of `--train_examples` plus that many, or of the whole training split
    when `--train_examples=0`.
    """
    examples = config.train_examples + config.validation_examples if config.train_examples else None
    images, labels, info = data.load(
        config.dataset, config.data_dir or None, "train", examples=examples, seed=config.seed
    )
    if config.validation_examples >= len(images):
        raise ValueError(
            f"--validation_examples={config.validation_examples} leaves no training examples: the "
            f"training split has {len(images)}"
        )
    if config.validation_examples:
        train, validation = data.train_validation_split(images, labels, config.validation_examples, seed=config.seed)
    else:
        train, validation = (images, labels), (images[:0], labels[:0])
    test_images, test_labels, _ = data.load(config.dataset, config.data_dir or None, "test")
    kept = data.subset_indices(test_labels, config.test_examples or None, config.seed)
    return Splits(train, validation, (test_images[kept], test_labels[kept]), info, kept, len(test_labels))


def augmentation(config: ExperimentConfig) -> str:
    """The `data.AUGMENTATIONS` entry `--augment` names ("auto": the dataset's standard choice)."""
    if config.augment == "auto":
        return "crop_flip" if data.standard_augmentation(config.dataset) else "off"
    return {"on": "crop_flip", "flip": "flip", "off": "off"}[config.augment]


def grid_choice(labels: np.ndarray, positions: np.ndarray, config: ExperimentConfig) -> np.ndarray:
    """Which of the test examples (`labels`, at `positions` of the whole split) the final grid attack grades.

    The images `--grid_subset` names, else `--grid_examples` of them drawn with the run's seed (`data.at_most`),
    else all; returned as indices into `labels`.
    """
    if not config.grid_subset:
        return np.arange(len(labels))[data.at_most(labels, config.grid_examples, config.seed)]
    wanted = report.image_positions(json.loads(Path(config.grid_subset).read_text()))
    found = np.searchsorted(positions, wanted)
    missing = (found >= len(positions)) | (positions[np.minimum(found, len(positions) - 1)] != wanted)
    if missing.any():
        raise ValueError(
            f"--grid_subset={config.grid_subset} names {int(missing.sum())} test images outside the run's "
            f"--test_examples={config.test_examples} (first: position {int(wanted[missing][0])})"
        )
    return found


EPOCH_TIMES = "epoch_seconds.json"
EPOCH_LOGS = "epoch_logs.json"
PRECISION_RECORD = "precision.json"
EVALUATION_STATE = "evaluation_state"
RUN_ARTEFACTS = (
    "metrics.json",
    "model.keras",
    "evaluation.json",
    "checkpoints",
    "backup",
    "logs",
    EPOCH_TIMES,
    EPOCH_LOGS,
    EVALUATION_STATE,
    PRECISION_RECORD,
)


def prepare_output_dir(config: ExperimentConfig) -> Path:
    """Creates `--output_dir`; refuses a finished run unless `--overwrite`, which clears its artefacts.

    An unfinished run (a backup but no metrics.json) is kept, so training resumes.
    Only the chief of a multi-worker cluster clears.
    """
    out = Path(config.output_dir)
    if (out / "metrics.json").is_file():
        if not config.overwrite:
            raise FileExistsError(
                f"--output_dir={out} holds a finished run (metrics.json); pass --overwrite to train again"
            )
    if config.overwrite and distribute.is_chief():
        for name in RUN_ARTEFACTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


RESUME_INDEPENDENT = frozenset(
    {
        "data_dir",
        "output_dir",
        "overwrite",
        "verbose",
        "strategy",
        "deterministic",
        "jit_compile",
        "test_examples",
        "grid_examples",
        "eval_every",
        "eval_k",
        "eval_chunk_size",
        "eval_batch_size",
        "grid_subset",
        "eval_resampling",
        "train_eval_examples",
    }
)
"""Fields that change neither the weights nor the optimiser's path: an unfinished run resumes under other values."""

EVALUATION_INDEPENDENT = RESUME_INDEPENDENT - {
    "test_examples",
    "grid_examples",
    "grid_subset",
    "eval_resampling",
    "train_eval_examples",
}
"""Fields that change neither a finished run's weights nor what its metrics.json measured (its test images).

A finished run recorded with other values of these still stands for the current flags (`benchmarks.reproduce`).
"""

SEARCH_INDEPENDENT = frozenset({"output_dir", "overwrite", "verbose"})
"""Fields a hyper-parameter search resumes under other values of (`tuning.check_resumable`): no trial changes."""


def legacy_values(saved: dict) -> dict:
    """How a run recorded before a field existed ran, where that differs from the field's default.

    worst_of_k picked both x~ of a three-fold batch (`--ce_adversary_objective=ce`) from one shared set of
    candidates, and the final evaluation resampled as training did (`--resampling`).
    """
    three_fold = saved.get("adversary") == "worst_of_k" and saved.get("ce_adversary_objective") == "ce"
    return {
        **({"shared_candidates": True} if three_fold else {}),
        "eval_resampling": saved.get("resampling", ExperimentConfig.resampling),
    }


def changed_flags(saved: dict, current: dict, ignored: frozenset[str] = frozenset()) -> dict:
    """The keys (flag names) of `current` (JSON-ready) whose value in `saved` differs, apart from `ignored`.

    `saved` is the JSON record of an earlier run or search; the keys come sorted, each with its value in `saved`.
    A config field `saved` lacks (written by an older version) counts as that field's default, which is how the
    older version ran; a key only `saved` has (a flag since removed) means nothing to the current version and is
    not compared. Where older versions behaved otherwise than a field's default, it counts as `legacy_values`
    says.
    """
    defaults = {**json.loads(json.dumps(ExperimentConfig().to_json())), **legacy_values(saved)}
    saved = {**{k: v for k, v in defaults.items() if k in current}, **saved}
    return {k: saved.get(k) for k in sorted(current.keys() - ignored) if saved.get(k) != current.get(k)}


def recorded_changes(config: ExperimentConfig, out: Path, ignored: frozenset[str] = frozenset()) -> dict:
    """The flags, apart from `ignored`, whose value in the run recorded in `out` differs from `config`'s.

    Each comes with its recorded value (from `out`'s config.json); empty when `out` records no run.
    """
    saved_path = out / "config.json"
    if not saved_path.is_file():
        return {}
    return changed_flags(json.loads(saved_path.read_text()), json.loads(json.dumps(config.to_json())), ignored)


def check_resumable(config: ExperimentConfig, out: Path) -> None:
    """Refuses to resume the unfinished run in `out` (a backup and its config.json) with other training flags.

    Its weights and optimiser state belong to the flags it was started with.
    """
    if callbacks.latest_backup(out / "backup") is None:
        return
    changed = recorded_changes(config, out, RESUME_INDEPENDENT)
    if changed:
        raise ValueError(
            f"--output_dir={out} holds an unfinished run started with {flag_list(changed)}: pass the "
            "same flags to resume it, or --overwrite to start afresh"
        )


def run_precision(config: ExperimentConfig, out: Path) -> precision.Choice:
    """The run's dtype policy: `--precision` resolved on this machine when the run starts, then what `out` records.

    A run resumed on other hardware thus keeps the policy it started with.
    """
    record = out / PRECISION_RECORD
    if record.is_file() and callbacks.latest_backup(out / "backup") is not None:
        return precision.Choice(**json.loads(record.read_text()))
    choice = precision.resolve(config.precision)
    if distribute.is_chief():
        files.write_text(record, json.dumps(choice._asdict()))
    return choice


def training_callbacks(
    config: ExperimentConfig, out: Path, splits: Splits, root: Path
) -> list[keras.callbacks.Callback]:
    """Backup for resuming, a stop at the first NaN loss, the last good checkpoint, TensorBoard, robust validation.

    They write into `root`: `out` on the chief, a scratch folder on other workers.
    """
    chief = distribute.is_chief()
    checkpoint = root / "checkpoints" / "last.keras"
    result = [
        callbacks.EpochTimes(root / EPOCH_TIMES),
        callbacks.EpochLogs(root / EPOCH_LOGS),
        callbacks.AtomicBackupAndRestore(root / "backup", restore_dir=out / "backup"),
        callbacks.StopOnNonFiniteLoss(checkpoint),
        callbacks.SaveLastModel(checkpoint),
    ]
    if chief:
        result.append(keras.callbacks.TensorBoard(str(out / "logs")))
    if config.eval_every:
        result.insert(
            0,
            callbacks.RobustValidation(
                *splits.validation,
                k=config.eval_k,
                every=config.eval_every,
                limits=config.limits,
                resampling=config.eval_resampling,
                seed=config.seed,
                batch_size=config.eval_batch_size or None,
                log_dir=out / "logs" if chief else None,
            ),
        )
    return result


def saved_form(model: InvarianceModel) -> keras.Model:
    """What a run saves as model.keras: `model`, or the owner's fine-tuned network when it takes another input.

    An `--init_model` written for another input convention than raw pixels is saved as its owner wrote it
    (`pretrained.owner_network`), so it takes what the original took; config.json records that convention.
    """
    owner = pretrained.owner_network(model.network)
    return model if owner is model.network else owner


def run(config: ExperimentConfig, extra_callbacks: list[keras.callbacks.Callback] | None = None) -> dict:
    """Trains and evaluates `config`; writes the output directory and returns `metrics.json`'s content.

    Rerunning an interrupted run resumes from its last finished epoch. On a
    multi-worker cluster every worker trains and only the chief evaluates and
    writes; other workers return an empty dict.
    """
    config.validate()
    strategy = distribute.make_strategy(config.strategy)
    out = prepare_output_dir(config)
    check_resumable(config, out)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    compute = run_precision(config, out)
    if config.verbose:
        print(f"precision: {compute.policy} ({compute.reason})", flush=True)
    with strategy.scope():
        network = initial_network(config, data.dataset_info(config.dataset), compute.policy)
    splits = load_splits(config)
    train_images, train_labels = splits.train
    steps_per_epoch = len(train_images) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"--batch_size={config.batch_size} is larger than the {len(train_images)} training examples")
    if distribute.is_chief():
        files.write_text(out / "config.json", json.dumps(config.to_json(), indent=2))
        files.write_text(out / "flags.cfg", "\n".join(flag_arguments(config)) + "\n")
    with strategy.scope():
        model = build_model(config, splits.info, steps_per_epoch, compute.policy, network)
    train_ds = data.train_dataset(
        train_images,
        train_labels,
        config.batch_size,
        augment=augmentation(config),
        seed=config.seed,
        first_epoch=callbacks.finished_epochs(out / "backup"),
    )
    validation_ds = (
        data.eval_dataset(*splits.validation, config.eval_batch_size or evaluation.default_batch_size())
        if config.validation_examples
        else None
    )
    root = out if distribute.is_chief() else Path(tempfile.mkdtemp(prefix=f"worker{distribute.task()[1]}_"))
    start = time.perf_counter()
    try:
        history = model.fit(
            train_ds,
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=validation_ds,
            shuffle=False,
            callbacks=training_callbacks(config, out, splits, root) + list(extra_callbacks or []),
            verbose=config.verbose,
        )
    finally:
        if root != out:
            shutil.rmtree(root, ignore_errors=True)
    seconds_this_process = time.perf_counter() - start
    if not distribute.is_chief():
        return {}
    callbacks.save_model_atomically(saved_form(model), out / "model.keras")
    epoch_seconds = callbacks.EpochTimes(out / EPOCH_TIMES).seconds()
    metrics = {
        "train_seconds": float(sum(epoch_seconds)),
        "train_seconds_this_process": seconds_this_process,
        "epoch_seconds": epoch_seconds,
        "epochs": config.epochs,
        "epochs_this_process": len(history.epoch),
        "replicas_in_sync": strategy.num_replicas_in_sync,
        "precision": compute.policy,
        "precision_reason": compute.reason,
        "parameters": cost.parameter_count(network),
        "macs_per_image": cost.macs_per_image(network),
        "final_train_logs": callbacks.EpochLogs(out / EPOCH_LOGS).last(),
        **final_metrics.robust_metrics(
            model,
            *splits.test,
            config,
            grid_choice(splits.test[1], splits.test_positions, config),
            state_dir=out / EVALUATION_STATE,
            positions=splits.test_positions,
            split_size=splits.test_split_size,
        ),
        **final_metrics.training_regime(model, *splits.train, config),
    }
    files.write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    for finished in ("backup", EVALUATION_STATE):
        shutil.rmtree(out / finished, ignore_errors=True)
    return metrics

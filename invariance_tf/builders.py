"""Where a config becomes the objects a run trains: its adversary, network, learning-rate schedule and model.

`build_model` is the one place where an `ExperimentConfig` becomes a compiled `InvarianceModel`; `saved_form` is
what a run saves of it.
"""

from __future__ import annotations

import keras

from invariance_tf import adversaries, data, networks, precision, schedules
from invariance_tf.experiment_config import ExperimentConfig
from invariance_tf.model import InvarianceModel
from invariance_tf.networks import pretrained


def build_adversary(config: ExperimentConfig) -> adversaries.Adversary | None:
    """The adversary choosing x~ for training, or None for standard training."""
    if config.adversary_name is None:
        return None
    kwargs = {"limits": config.training_limits, "resampling": config.resampling}
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
    `InputConvention` layer (`pretrained.trainable_network`). Its layers compute under the dtype policy `policy`.
    """
    if config.init_model:
        return pretrained.trainable_network(
            config.init_model, info.image_shape, info.num_classes, policy, config.convention()
        )
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


def saved_form(model: InvarianceModel) -> keras.Model:
    """What a run saves as model.keras: `model`, or the owner's fine-tuned network when it takes another input.

    An `--init_model` written for another input convention than raw pixels is saved as its owner wrote it
    (`pretrained.owner_network`), so it takes what the original took; config.json records that convention.
    """
    owner = pretrained.owner_network(model.network)
    return model if owner is model.network else owner

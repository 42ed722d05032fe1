"""The rules every classifier from disk follows, stated once for evaluation and fine-tuning alike.

- input: images [batch, H, W, C] ("nhwc") or, for an ONNX model, [batch, C, H, W] ("nchw"); a model's declared
  input shape must take them (`check_input_shape`; `detect_layout` finds an ONNX model's axis order). The pixel
  convention (raw 0-255, [0, 1], a mean and std) is `layers.InputConvention`'s rule, its per-channel counts
  `fits_channels`.
- output: the class scores are the output named `logits`, else the only one (`scores_output`), float
  [batch, classes] (`check_scores`), used as float32 logits (`float32_logits`); probabilities, a final
  softmax's, are told apart from logits by `refuse_probabilities` (fine-tuning needs logits).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

LAYOUTS = ("auto", "nhwc", "nchw")
"""Axis orders a model may take: "auto" (`detect_layout`), "nhwc" [batch, H, W, C] or "nchw" [batch, C, H, W]."""


def input_dims(image_shape: Sequence[int], layout: str) -> tuple[int, ...]:
    """The per-example input shape of a `layout` model for images of `image_shape` (height, width, channels)."""
    height, width, channels = image_shape
    return (channels, height, width) if layout == "nchw" else (height, width, channels)


def fits(declared: Sequence[int | None], dims: Sequence[int]) -> bool:
    """Whether a declared input shape [batch, ...] (None: any size) takes examples of shape `dims`."""
    return len(declared) == len(dims) + 1 and all(d is None or d == e for d, e in zip(tuple(declared)[1:], dims))


def check_input_shape(declared: Sequence[int | None], dims: Sequence[int], where: str, layout: str = "") -> None:
    """Raises ValueError (one line) unless a model declaring the input shape `declared` takes examples of `dims`.

    `dims` are in the model's axis order, named by `layout` in the message when given.
    """
    if not fits(declared, dims):
        named = f" ({layout})" if layout else ""
        raise ValueError(
            f"{where} input must be [batch, {', '.join(map(str, dims))}]{named} to fit the data; "
            f"the model declares {list(declared)}"
        )


def detect_layout(declared: Sequence[int | None], image_shape: Sequence[int]) -> str:
    """The axis order, "nhwc" or "nchw", in which a model's declared input shape takes images of `image_shape`.

    The declared shape is [batch, ...] (None: any size) and `image_shape` is (height, width, channels), so the
    order says where the model's channel axis is. Raises ValueError (one line) when both orders fit (e.g. every
    size unknown) or neither does.
    """
    fitting = [layout for layout in LAYOUTS[1:] if fits(declared, input_dims(image_shape, layout))]
    if len(fitting) == 1:
        return fitting[0]
    nhwc, nchw = (", ".join(map(str, input_dims(image_shape, layout))) for layout in LAYOUTS[1:])
    if fitting:
        raise ValueError(
            f"cannot tell the layout of the model input {list(declared)}: both [batch, {nhwc}] (nhwc) "
            f"and [batch, {nchw}] (nchw) fit; give --input_layout=nhwc or --input_layout=nchw"
        )
    raise ValueError(
        f"model input must be [batch, {nhwc}] (nhwc) or [batch, {nchw}] (nchw) to fit the data; "
        f"the model declares {list(declared)}"
    )


def scores_output(names: Sequence[str], where: str) -> str:
    """Which of a model's outputs holds the class scores: `logits` if it has one, else its only output.

    Raises ValueError (one line, starting with `where`) when there are several outputs and none is `logits`.
    """
    if "logits" in names:
        return "logits"
    if len(names) != 1:
        raise ValueError(
            f"{where} has no 'logits' output and more than one output ({sorted(names)}); "
            "cannot tell which are the class scores"
        )
    return names[0]


def check_scores(scores, batch: int, num_classes: int, where: str) -> None:
    """Raises ValueError (one line) unless `scores` are float [batch, num_classes]: one score per class."""
    shape = tuple(scores.shape)
    if shape != (batch, num_classes) or not tf.as_dtype(scores.dtype).is_floating:
        raise ValueError(
            f"{where} output must be float [batch, {num_classes}] (one score per class of the data); "
            f"got {scores.dtype.name} {list(shape)} for a batch of {batch}"
        )


def float32_logits(scores) -> tf.Tensor:
    """Class scores of any float dtype (a mixed policy's bfloat16, ...) as the float32 logits margins are taken of."""
    return tf.cast(scores, tf.float32)


def refuse_probabilities(scores: np.ndarray, where: str) -> None:
    """Raises ValueError (one line) when `scores` [batch, classes] look like probabilities, not logits.

    They do when every row is >= 0 and sums to 1 (a final softmax): h = KL and the cross-entropy term take logits.
    """
    scores = np.asarray(scores, np.float64)
    if np.all(scores >= 0) and np.allclose(scores.sum(axis=-1), 1.0, atol=1e-2):
        raise ValueError(
            f"{where} returns probabilities (on {len(scores)} random images every output row is >= 0 and sums to "
            "1), but fine-tuning needs logits (h=KL and the cross-entropy apply the softmax themselves): remove "
            "its final softmax and save it again"
        )

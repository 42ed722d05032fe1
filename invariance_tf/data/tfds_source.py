"""A TFDS copy of a dataset: read when prepared, downloaded where its server answers, refused offline in one line."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from invariance_tf.data.registry import DECODE_BATCH, IMAGE_SHAPE, dataset_info


def prepare_copy(dataset: str, tfds_data_dir: str | Path | None) -> None:
    """Makes sure TFDS has a prepared copy, downloading one when the dataset's server is reachable.

    The download is TFDS' own. When the server is not reachable, raises FileNotFoundError saying how to use
    local data.
    """
    builder = tfds.builder(dataset, data_dir=tfds_data_dir)
    if builder.is_prepared():
        return
    host = dataset_info(dataset).download_host
    searched = Path(builder.data_dir).parents[1]
    if not reachable(host):
        raise FileNotFoundError(
            f"No TFDS copy of {dataset!r} found in {str(searched)!r}, and {host} (its download server) is out of "
            f"reach: pass --data_dir=DIR pointing at an ImageFolder tree DIR/{{train,test}}/<class>/<image> "
            f"(e.g. --data_dir=../shared/data/cifar10 for cifar10), or run once online to download it"
        )
    print(f"No TFDS copy of {dataset!r} in {str(searched)!r}: downloading it from {host}", flush=True)
    builder.download_and_prepare()


def reachable(host: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to `host`'s HTTPS port opens within `timeout` seconds."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def read_split(dataset: str, split: str, tfds_data_dir: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Reads a prepared TFDS split into uint8 images and int64 labels, without downloading."""
    examples = tfds.load(dataset, split=split, data_dir=tfds_data_dir, download=False, as_supervised=True)
    parts = list(tfds.as_numpy(examples.batch(DECODE_BATCH)))
    images = np.concatenate([x for x, _ in parts]).astype(np.uint8)
    labels = np.concatenate([y for _, y in parts]).astype(np.int64)
    if images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"TFDS {dataset!r} {split} images are {images.shape[1:]}; expected {IMAGE_SHAPE}")
    return images, labels


def names(dataset: str, split: str, tfds_data_dir: str | Path | None) -> tuple[list[str], np.ndarray]:
    """Each example's name (`load_names`) and int64 label, in the order `read_split` reads them.

    The images are read but not decoded.
    """
    keys = ("id", "label") if "id" in tfds.builder(dataset, data_dir=tfds_data_dir).info.features else ("label",)
    examples = tfds.load(
        dataset,
        split=split,
        data_dir=tfds_data_dir,
        download=False,
        decoders={"image": tfds.decode.SkipDecoding()},
    ).map(lambda example: {key: example[key] for key in keys})
    parts = list(tfds.as_numpy(examples.batch(DECODE_BATCH)))
    labels = np.concatenate([part["label"] for part in parts]).astype(np.int64)
    if "id" not in keys:
        return [f"{split}[{index}]" for index in range(len(labels))], labels
    return [name.decode() for part in parts for name in part["id"]], labels

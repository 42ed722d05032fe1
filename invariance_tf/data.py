"""Datasets: TFDS names for users online, or a local TFDS ImageFolder tree `<root>/<split>/<class>/<image>`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def read_image_folder(
    root: str | Path, split: str, per_class: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decodes `<root>/<split>/<class>/*` into uint8 images [N, H, W, 3] and int64 labels [N].

    Labels are the class folder names sorted alphabetically (the TFDS
    ImageFolder convention). JPEGs are decoded with libjpeg's accurate IDCT,
    which matches Pillow. `per_class` keeps the first files (sorted by name)
    of each class.
    """
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"No split folder {str(split_dir)!r} (expected <root>/<split>/<class>/<image>)")
    class_names = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(class_names):
        files = sorted(p for p in (split_dir / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files[:per_class]:
            data = tf.io.read_file(str(path))
            images.append(tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE").numpy()
                          if path.suffix.lower() in (".jpg", ".jpeg")
                          else tf.io.decode_image(data, channels=3, expand_animations=False).numpy())
            labels.append(label)
    return np.stack(images), np.asarray(labels, np.int64), class_names

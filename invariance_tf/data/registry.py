"""The paper's datasets by name: `DATASETS`, each with its `DatasetInfo` (classes in label order, image shape).

Images are uint8 `IMAGE_SHAPE` RGB and labels int64 in every source; `SPLITS` are the splits a source holds.
"""

from __future__ import annotations

import dataclasses

SPLITS = ("train", "test")


IMAGE_SHAPE = (32, 32, 3)


DECODE_BATCH = 4096


CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


CIFAR100_CLASSES = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)


SVHN_CLASSES = tuple(str(digit) for digit in range(10))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    Attributes:
        name: TFDS name (`cifar10`, `cifar100`, `svhn_cropped`).
        class_names: label id -> class name, in canonical label order.
        image_shape: `(height, width, channels)` of every image.
        standard_augmentation: whether the paper's "std" training uses random
            crops and flips on this dataset (CIFAR yes, SVHN no).
        download_host: the server TFDS downloads the dataset from, probed
            before a download so that an offline machine fails in seconds.
    """

    name: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    standard_augmentation: bool
    download_host: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


DATASETS = {
    "cifar10": DatasetInfo("cifar10", CIFAR10_CLASSES, IMAGE_SHAPE, True, "www.cs.toronto.edu"),
    "cifar100": DatasetInfo("cifar100", CIFAR100_CLASSES, IMAGE_SHAPE, True, "www.cs.toronto.edu"),
    "svhn_cropped": DatasetInfo("svhn_cropped", SVHN_CLASSES, IMAGE_SHAPE, False, "ufldl.stanford.edu"),
}


def dataset_info(dataset: str) -> DatasetInfo:
    """Returns the `DatasetInfo` of `dataset`, raising ValueError for unknown names."""
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[dataset]


def standard_augmentation(dataset: str) -> bool:
    """Whether the paper trains `dataset` with random crops and flips (CIFAR) or without (SVHN)."""
    return dataset_info(dataset).standard_augmentation

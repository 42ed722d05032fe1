"""Installs invariance_tf: invariance-inducing regularisation for spatial robustness (TF / Keras 3)."""

from setuptools import find_packages, setup

# onnxruntime runs ONNX models in trainers.evaluate; tf2onnx (>= 1.17: 1.16 pins protobuf 3.20, which breaks
# TensorFlow 2.21) and onnx let Keras' model.export(..., format="onnx") write them, as the tests do.
ONNX = ["onnxruntime>=1.20", "onnx>=1.17", "tf2onnx>=1.17"]

setup(
    name="invariance_tf",
    version="0.1.0",
    description=(
        "Keras 3 library and trainers that make image classifiers invariant to small "
        "translations and rotations (Yang, Wang, Heinze-Deml, NeurIPS 2019)."
    ),
    license="MIT",
    project_urls={"Paper": "https://arxiv.org/abs/1906.11235"},
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Operating System :: OS Independent",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    # Only the library: the CLIs (trainers, benchmarks) run from the checkout, `python -m trainers.fit`,
    # and benchmarks write into it (docs/results), so they are not installed as top-level site-packages.
    packages=find_packages(include=["invariance_tf", "invariance_tf.*"]),
    python_requires=">=3.10",
    install_requires=[
        # Upper bounds on keras and keras-tuner: the code overrides private members of both (docs/development.md);
        # raise a bound only after checking that list against the new release.
        "keras>=3.10,<3.16",
        "tensorboard>=2.16",
        "tensorflow-datasets>=4.9",
        "importlib_resources>=6",  # TFDS needs it to download a dataset (its download_and_prepare)
        "keras-tuner[bayesian]>=1.4.7,<1.5",
        "absl-py>=2.0",
        "numpy>=1.26",
        "matplotlib>=3.8",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu==2.21.*"],
        "gpu": ["tensorflow[and-cuda]==2.21.*"],
        "onnx": ONNX,
        # ruff within one minor release: a new minor may change the formatter's style, failing .ci/run's check.
        "test": ["pytest>=8", "pillow>=10", "ruff>=0.17.6,<0.18", "cogapp>=3.4", *ONNX],
        "peers": ["foolbox>=3.3,<3.4"],
        # The documentation site (mkdocs.yml): `python -m mkdocs build --strict` in .ci/run, `mkdocs serve` to read it.
        "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26"],
    },
)

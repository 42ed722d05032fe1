"""Installs invariance_tf: invariance-inducing regularisation for spatial robustness (TF / Keras 3)."""
from setuptools import find_packages, setup

setup(
    name="invariance_tf",
    version="0.1.0",
    description=(
        "Keras 3 library and trainers that make image classifiers invariant to small "
        "translations and rotations (Yang, Wang, Heinze-Deml, NeurIPS 2019)."
    ),
    packages=find_packages(include=["invariance_tf*", "trainers*", "tuning*", "benchmarks*"]),
    python_requires=">=3.10",
    install_requires=[
        "keras>=3.10",
        "tensorboard>=2.16",
        "tensorflow-datasets>=4.9",
        "keras-tuner[bayesian]>=1.4.7",
        "absl-py>=2.0",
        "numpy>=1.26",
        "matplotlib>=3.8",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu==2.21.*"],
        "gpu": ["tensorflow[and-cuda]==2.21.*"],
        "test": ["pytest>=8", "pillow>=10"],
        "peers": ["foolbox>=3.3,<3.4"],
    },
)

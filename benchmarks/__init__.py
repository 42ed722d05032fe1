"""Benchmarks and the reproduction of the paper's tables, each run as `python -m benchmarks.<name>`."""

from pathlib import Path

# The CIFAR-10 ImageFolder copy beside the repository, read by the timing benchmarks unless given --data_dir.
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"

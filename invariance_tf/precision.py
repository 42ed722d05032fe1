"""Compute precision by hardware: which Keras dtype policy `--precision=auto` trains in, and why.

bfloat16 pays only where the hardware computes it natively. On x86 CPUs that
means AVX512_BF16 or AMX-BF16; elsewhere oneDNN emulates it, which was measured
7x slower than float32 on an AVX2-only AMD EPYC (and 1.2-1.25x faster than
float32 on CPUs with AVX512_BF16, for the CPU recipe's ResNet-9). On ARM it is
the `bf16` feature; on NVIDIA GPUs compute capability 8.0 (Ampere) or newer.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import tensorflow as tf

AUTO = "auto"
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
CHOICES = (AUTO, *POLICIES)
# CPU feature flags (as /proc/cpuinfo spells them) that mean native bfloat16 arithmetic.
NATIVE_BFLOAT16_CPU_FEATURES = ("avx512_bf16", "amx_bf16", "bf16")
MIN_BFLOAT16_GPU_CAPABILITY = (8, 0)


class Choice(NamedTuple):
    """A dtype policy and the reason it was chosen (recorded in a run's metrics.json)."""

    policy: str
    reason: str


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags, lower case, as in /proc/cpuinfo's `flags` or ARM's `Features` line.

    Empty where the file does not exist (macOS, Windows).
    """
    if not cpuinfo.is_file():
        return frozenset()
    for line in cpuinfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.lower().split())
    return frozenset()


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capability (major, minor) of each visible GPU; (0, 0) where TF does not report one."""
    capabilities = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capabilities.append(tuple(details.get("compute_capability") or (0, 0)))
    return capabilities


def choose(precision: str, features: Iterable[str], gpus: Iterable[tuple[int, int]] = ()) -> Choice:
    """The policy for `--precision=precision`, given CPU `features` and the GPUs' compute capabilities `gpus`.

    An explicit policy as given; "auto" is bfloat16 where it is native, float32 otherwise.
    """
    if precision not in CHOICES:
        raise ValueError(f"--precision={precision} is invalid: valid values are {list(CHOICES)}")
    if precision != AUTO:
        return Choice(precision, "given")
    gpus = list(gpus)
    if gpus:
        if all(capability >= MIN_BFLOAT16_GPU_CAPABILITY for capability in gpus):
            return Choice(
                "mixed_bfloat16",
                f"auto: every GPU computes bfloat16 natively (compute capability "
                f"{', '.join(f'{major}.{minor}' for major, minor in gpus)})",
            )
        return Choice("float32", "auto: a GPU older than compute capability 8.0 has no native bfloat16")
    native = sorted(set(features) & set(NATIVE_BFLOAT16_CPU_FEATURES))
    if native:
        return Choice("mixed_bfloat16", f"auto: the CPU computes bfloat16 natively ({', '.join(native)})")
    return Choice(
        "float32",
        "auto: the CPU has no native bfloat16 (none of "
        f"{', '.join(NATIVE_BFLOAT16_CPU_FEATURES)}), where it is slower than float32",
    )


def resolve(precision: str) -> Choice:
    """`choose` on this machine's hardware."""
    if precision != AUTO:
        return choose(precision, ())
    return choose(precision, cpu_features(), gpu_capabilities())


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (e.g. "AMD EPYC"), or the platform's processor name where /proc/cpuinfo is absent."""
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def describe_machine() -> str:
    """This machine's CPU and the features that decide its precision, for benchmark output and records."""
    shown = sorted(f for f in cpu_features() if f.startswith(("avx", "amx", "fma")) or f == "bf16")
    return f"{cpu_model()} ({platform.machine()}), features: {' '.join(shown) or 'not readable'}"

"""Throughput of one p4 / p4m G-conv layer against a planar Conv2D with the same channel counts, in one run.

A G-conv with C G-channels in and out on a group of order |G| is a filter expansion (one gather of its base
kernel into a (3, 3, C|G|, C|G|) bank) and one planar conv; the planar layer is `keras.layers.Conv2D(C|G|, 3,
padding="same")` on the same (batch, side, side, C|G|) input, so both do the same multiply-accumulates. Each
case times, per dtype policy (float32, mixed_bfloat16), the forward pass and the forward plus backward pass
(gradients of a sum of the outputs w.r.t. the weights and the input, as inside a network), each under
`tf.function`, and the G-conv's filter expansion alone (bank and its gradient into the base kernel), the part
of its cost a planar conv does not have (`expansion_share`: its seconds over the G-conv pass's). G-conv and
planar calls alternate, and the ratio is the median over the adjacent pairs of planar seconds / G-conv seconds
(1 = G-conv as fast; the goal is >= 0.9), so that load from other processes, which drifts, falls on both alike;
the ratio of the median seconds is beside it. The JSON record goes to `--out`.

    python -m benchmarks.gconv_throughput [--batch_size 128] [--repeats 41] [--out <json>]
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from benchmarks.common import cli, timing
from invariance_tf import files, networks
from invariance_tf.layers import GroupConv2D, P4ConvP4, P4MConvP4M
from invariance_tf.options import check, option

# (group, G-channels C, side): G-ResNet-9 stage-1 layers on p4 (64 planes) and p4m (88), and Cohen & Welling's
# p4m G-ResNet44 stage-3 layer (360 planes at 8x8).
CASES = (("p4", 16, 16), ("p4m", 11, 16), ("p4m", 45, 8))
POLICIES = ("float32", "mixed_bfloat16")
G_CONVS = {"p4": P4ConvP4, "p4m": P4MConvP4M}
ORDERS = {"p4": 4, "p4m": 8}


@dataclasses.dataclass(frozen=True)
class GConvThroughputOptions:
    """The flags of `benchmarks.gconv_throughput`."""

    batch_size: int = option(128, "images per call")
    repeats: int = option(41, "timed calls per layer and pass (alternating G-conv and planar)")
    warmup: int = option(3, "untimed calls per layer and pass (tracing included)")
    out: str = option("docs/results/gconv_throughput/gconv_throughput.json", "the JSON record; empty = print only")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        check(
            self,
            [
                ("batch_size", self.batch_size >= 1, "must be >= 1"),
                ("repeats", self.repeats >= 1, "must be >= 1"),
                ("warmup", self.warmup >= 1, "must be >= 1"),
            ],
        )


def _passes(layer: keras.layers.Layer, x: tf.Tensor) -> dict[str, Callable[[], object]]:
    """The layer's forward and forward + backward passes on `x`, traced once each."""

    @tf.function
    def forward():
        return layer(x)

    @tf.function
    def backward():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(layer(x), tf.float32))
        return tape.gradient(loss, [x, *layer.trainable_variables])

    return {"forward": forward, "forward+backward": backward}


def _expansion_seconds(layer: GroupConv2D, options: GConvThroughputOptions) -> float:
    """Median wall seconds of building the layer's filter bank and back-propagating into its base kernel."""

    @tf.function
    def expand_and_back():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.cast(layer.expanded_kernel, tf.float32)))
        return tape.gradient(loss, layer.kernel)

    return timing.median_times(expand_and_back, options.repeats, options.warmup)[0]


def _alternating_times(
    first: Callable[[], object], second: Callable[[], object], repeats: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Wall seconds of `repeats` calls of `first()` and of `second()`, alternating which goes first, after warm-up."""
    for _ in range(warmup):
        first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for repeat in range(repeats):
        order = ((first, times[0]), (second, times[1]))
        for fn, record in order if repeat % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            record.append(time.perf_counter() - start)
    return times


def measure_case(group: str, channels: int, side: int, policy: str, options: GConvThroughputOptions) -> list[dict]:
    """One layer shape under one dtype policy: a record per pass with both medians and their ratio."""
    planes = channels * ORDERS[group]
    with networks.dtype_policy(policy):
        g_conv = G_CONVS[group](channels, 3)
        planar = keras.layers.Conv2D(planes, 3, padding="same")
    compute_dtype = g_conv.compute_dtype
    x = tf.cast(tf.random.stateless_normal((options.batch_size, side, side, planes), seed=(0, 1)), compute_dtype)
    g_conv.build(x.shape)
    planar.build(x.shape)
    records = []
    g_passes, planar_passes = _passes(g_conv, x), _passes(planar, x)
    expansion_seconds = _expansion_seconds(g_conv, options)
    for name in g_passes:
        g_times, planar_times = _alternating_times(g_passes[name], planar_passes[name], options.repeats, options.warmup)
        g_seconds, planar_seconds = statistics.median(g_times), statistics.median(planar_times)
        records.append(
            {
                "group": group,
                "g_channels": channels,
                "planes": planes,
                "side": side,
                "policy": policy,
                "pass": name,
                "g_conv_seconds": g_seconds,
                "planar_seconds": planar_seconds,
                "g_conv_images_per_second": options.batch_size / g_seconds,
                "planar_images_per_second": options.batch_size / planar_seconds,
                "ratio": statistics.median(planar / g for planar, g in zip(planar_times, g_times)),
                "ratio_of_medians": planar_seconds / g_seconds,
                "expansion_seconds_forward_backward": expansion_seconds,
                "expansion_share": expansion_seconds / g_seconds,
            }
        )
    return records


def main(options: GConvThroughputOptions) -> None:
    tf.get_logger().setLevel("ERROR")  # every case traces new functions on purpose: no retracing warnings
    start_load = timing.load_average()
    print(f"batch {options.batch_size}, {options.repeats} timed calls, load {start_load}", flush=True)
    records = []
    for group, channels, side in CASES:
        for policy in POLICIES:
            for record in measure_case(group, channels, side, policy, options):
                records.append(record)
                print(
                    f"{group:4s} C={channels:3d} ({record['planes']:3d} planes) {side:2d}x{side:<2d} {policy:15s} "
                    f"{record['pass']:17s} G-conv {record['g_conv_seconds'] * 1e3:8.2f} ms  planar "
                    f"{record['planar_seconds'] * 1e3:8.2f} ms  ratio {record['ratio']:.3f} (of medians "
                    f"{record['ratio_of_medians']:.3f}, expansion "
                    f"{record['expansion_seconds_forward_backward'] * 1e3:.2f} ms)",
                    flush=True,
                )
    ratios = [record["ratio"] for record in records]
    print(f"paired ratio planar / G-conv seconds: min {min(ratios):.3f}, median {statistics.median(ratios):.3f}")
    if options.out:
        result = {
            "command": "python -m benchmarks.gconv_throughput "
            + " ".join(f"--{k}={v}" for k, v in dataclasses.asdict(options).items()),
            "machine": {"architecture": platform.machine(), "cpus": os.cpu_count()},
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "load_average": {"start": start_load, "end": timing.load_average()},
            "goal": "ratio >= 0.9 (G-conv throughput at least 0.9x the planar Conv2D's)",
            "min_ratio": min(ratios),
            "median_ratio": statistics.median(ratios),
            "max_expansion_share": max(record["expansion_share"] for record in records),
            "records": records,
        }
        files.write_text(Path(options.out), json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    cli.run(GConvThroughputOptions, main)

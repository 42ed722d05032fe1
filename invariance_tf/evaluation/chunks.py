"""Running an attack by name: in one pass, or chunk by chunk with each chunk saved so a killed evaluation resumes.

A chunk's state folder is named by a digest of everything its results depend on (`_state_key`); that digest
must not change between versions, or a killed evaluation would start over instead of resuming.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from invariance_tf import files
from invariance_tf.evaluation import attacks
from invariance_tf.evaluation.classifiers import fingerprint
from invariance_tf.evaluation.pairs import DEFAULT_SEED, check_inputs, check_seed
from invariance_tf.evaluation.result import Model, RobustResult

_ADDED_ARGUMENT_DEFAULTS = {"resampling": "composed"}
_PER_EXAMPLE_FIELDS = (
    "correct",
    "worst_transform",
    "margin",
    "lowest_transforms",
    "box_correct",
    "invariance",
    "mean_kl",
)
_ARRAY_FIELDS = (*_PER_EXAMPLE_FIELDS, "per_transform_accuracy")


def run_attack(
    attack: str,
    model: Model,
    images,
    labels,
    state_dir: str | Path | None = None,
    chunk_size: int = 1000,
    model_key: str | None = None,
    verbose: bool = False,
    **arguments: Any,
) -> RobustResult:
    """`attacks.ATTACKS[attack]` on the examples, `arguments` going to it.

    With `state_dir` and a resumable attack, chunk by chunk saved there (`resumable`, which `chunk_size` and
    `model_key` are for); else in one pass. `verbose` reaches an attack that takes it (the grid's progress bar).
    """
    spec = attacks.get(attack)
    if state_dir is not None and spec.resumable:
        return resumable(attack, model, images, labels, state_dir, chunk_size, model_key, verbose, **arguments)
    return spec.run(model, images, labels, **spec.accepted({"verbose": verbose}), **arguments)


def resumable(
    attack: str,
    model: Model,
    images,
    labels,
    state_dir: str | Path,
    chunk_size: int = 1000,
    model_key: str | None = None,
    verbose: bool = False,
    **kwargs: Any,
) -> RobustResult:
    """Runs `attack` chunk by chunk of `chunk_size` examples, saving each chunk so a killed run resumes.

    `attack` is a resumable entry of `attacks.ATTACKS`: "worst_of_k", "spgd",
    "grid" (`grid_accuracy`) or "refined" (`refine`, with `grid=` a full result
    on the same images); `kwargs` go to it. Chunk i of a seeded attack (one
    taking `seed`) gets the seed `seed` folded with i, so results depend on
    `chunk_size` but never on where a run was killed.

    Each finished chunk is written atomically (`files.atomic_path`)
    to `state_dir/<attack>-<key>/chunk_<i>.npz`, where the key digests the
    model (`model_key`, default `fingerprint(model)`), the images and
    labels, the attack, its arguments and `chunk_size`: a changed setting
    starts a new folder instead of reusing stale chunks. A rerun reads the
    chunks present and evaluates only the others; `resumed_examples` says
    how many were read.
    """
    valid = [name for name, entry in attacks.ATTACKS.items() if entry.resumable]
    if attack not in valid:
        raise ValueError(f"Unknown resumable attack {attack!r}; valid attacks are {valid}")
    spec = attacks.ATTACKS[attack]
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1; got {chunk_size!r}")
    for name, source in spec.inputs.items():
        if not isinstance(kwargs.get(name), RobustResult):
            raise ValueError(
                f"resumable({attack!r}, ...) needs {name}=<the {source}'s RobustResult on the same examples>"
            )
    images, labels, _ = check_inputs(images, labels, kwargs.get("batch_size"))
    folder = Path(state_dir) / f"{attack}-{_state_key(attack, model, images, labels, chunk_size, model_key, kwargs)}"
    folder.mkdir(parents=True, exist_ok=True)
    chunks, resumed = [], 0
    starts = range(0, len(images), int(chunk_size))
    for index, start in enumerate(starts):
        path = folder / f"chunk_{index:06d}.npz"
        stop = start + int(chunk_size)
        if path.is_file():
            chunks.append(_read_chunk(path))
            resumed += len(chunks[-1].correct)
            continue
        chunks.append(
            _run_chunk(spec, model, images[start:stop], labels[start:stop], index, start, stop, verbose, kwargs)
        )
        _write_chunk(path, chunks[-1])
    if verbose and resumed:
        print(f"{attack}: resumed {resumed} of {len(images)} examples from {folder}")
    return dataclasses.replace(_concatenate(chunks), resumed_examples=resumed)


def _state_key(
    attack: str,
    model: Model,
    images: np.ndarray,
    labels: np.ndarray,
    chunk_size: int,
    model_key: str | None,
    kwargs: Mapping[str, Any],
) -> str:
    """A 16-hex-digit digest naming the state folder of one (model, data, attack, arguments, chunking).

    Arguments added since states were first saved are left out at their defaults
    (`_ADDED_ARGUMENT_DEFAULTS`), so a state saved before they existed still resumes.
    """
    kwargs = {
        name: value
        for name, value in kwargs.items()
        if not (name in _ADDED_ARGUMENT_DEFAULTS and value == _ADDED_ARGUMENT_DEFAULTS[name])
    }
    arguments = {
        name: _digest_arrays(
            *(a for a in (value.correct, value.worst_transform, value.margin, value.lowest_transforms) if a is not None)
        )
        if isinstance(value, RobustResult)
        else np.asarray(value).tolist()
        for name, value in sorted(kwargs.items())
    }
    key = {
        "attack": attack,
        "model": model_key or fingerprint(model),
        "data": _digest_arrays(images, labels),
        "chunk_size": int(chunk_size),
        "arguments": arguments,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _digest_arrays(*arrays: np.ndarray) -> str:
    """A hex digest of arrays' shapes, dtypes and bytes."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _run_chunk(
    spec: attacks.Attack,
    model: Model,
    images: np.ndarray,
    labels: np.ndarray,
    index: int,
    start: int,
    stop: int,
    verbose: bool,
    kwargs: dict,
) -> RobustResult:
    """One chunk of `resumable`: the attack on images[start:stop].

    Its seed is folded with the chunk index, and its inputs (`Attack.inputs`) are cut to the chunk.
    """
    kwargs = dict(kwargs)
    if spec.takes("seed"):
        seed = check_seed(kwargs.get("seed", DEFAULT_SEED))
        kwargs["seed"] = tf.random.experimental.stateless_fold_in(seed, index).numpy()
    for name in spec.inputs:
        kwargs[name] = _slice(kwargs[name], start, stop)
    return spec.run(model, images, labels, **spec.accepted({"verbose": verbose}), **kwargs)


def _slice(result: RobustResult, start: int, stop: int) -> RobustResult:
    """The per-example fields of `result` for examples [start, stop) (evaluations and per-transform dropped)."""
    fields = {
        name: getattr(result, name)[start:stop] for name in _PER_EXAMPLE_FIELDS if getattr(result, name) is not None
    }
    return RobustResult(accuracy=float(fields["correct"].mean()), **fields)


def _write_chunk(path: Path, result: RobustResult) -> None:
    """Saves a chunk's result atomically: a reader sees the old state or the whole new file, never a part."""
    arrays = {name: getattr(result, name) for name in _ARRAY_FIELDS if getattr(result, name) is not None}
    with files.atomic_path(path) as partial, open(partial, "wb") as file:
        np.savez(file, evaluations=result.evaluations, **arrays)


def _read_chunk(path: Path) -> RobustResult:
    """The chunk result `_write_chunk` saved at `path`."""
    with np.load(path) as saved:
        arrays = {name: saved[name] for name in _ARRAY_FIELDS if name in saved}
        evaluations = int(saved["evaluations"])
    return RobustResult(accuracy=float(arrays["correct"].mean()), evaluations=evaluations, **arrays)


def _concatenate(chunks: Sequence[RobustResult]) -> RobustResult:
    """One result from the results of consecutive chunks of examples."""
    sizes = np.asarray([len(chunk.correct) for chunk in chunks])
    fields = {
        name: np.concatenate([getattr(chunk, name) for chunk in chunks])
        for name in _PER_EXAMPLE_FIELDS
        if getattr(chunks[0], name) is not None
    }
    per_transform = None
    if chunks[0].per_transform_accuracy is not None:
        per_transform = sum(chunk.per_transform_accuracy * size for chunk, size in zip(chunks, sizes)) / sizes.sum()
    return RobustResult(
        accuracy=float(fields["correct"].mean()),
        per_transform_accuracy=per_transform,
        evaluations=sum(chunk.evaluations for chunk in chunks),
        **fields,
    )

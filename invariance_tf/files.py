"""Writes that a crash leaves either the old file (or folder) or the whole new one, never a part.

Everything a run must not lose goes through here: configs, metrics, epoch
times, backups, checkpoints and evaluation chunks. The new content is written
under a temporary name beside the target, flushed to disk, and renamed over
the target (`os.replace`, atomic on POSIX); the folder holding it is then
flushed too, so the rename itself survives the machine going down.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

PARTIAL = ".partial"


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace_durably(source: str | Path, target: str | Path) -> None:
    """Flushes `source` (a file, or a folder and the files in it) to disk, then renames it to `target`."""
    source, target = Path(source), Path(target)
    for path in [source, *sorted(source.rglob("*"))] if source.is_dir() else [source]:
        _fsync(path)
    os.replace(source, target)
    _fsync(target.parent)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """Yields `<path>.partial-<pid><suffix>` to write (a file or a folder), which then replaces `path`.

    On success it replaces `path` durably, on an error it is removed and `path` is untouched. The name is per
    process, so processes writing the same file (the workers of a multi-worker run) never take each other's
    partial: the last rename wins, whole. `suffix` is for writers that insist on an extension, such as
    `Model.save` on `.keras`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}{PARTIAL}-{os.getpid()}{suffix}")
    _remove(partial)
    try:
        yield partial
    except BaseException:
        _remove(partial)
        raise
    replace_durably(partial, path)


def write_text(path: str | Path, text: str) -> None:
    """Writes `text` to `path` atomically and durably."""
    with atomic_path(path) as partial:
        partial.write_text(text)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)

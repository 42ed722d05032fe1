"""Atomic, durable writes: the target is the old content or the whole new one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from invariance_tf import files


def test_write_text_replaces_and_leaves_no_partial(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    files.write_text(target, "old")
    files.write_text(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_an_error_while_writing_keeps_the_old_content(tmp_path):
    target = tmp_path / "table.md"
    files.write_text(target, "old")
    with pytest.raises(RuntimeError), files.atomic_path(target) as partial:
        partial.write_text("half")
        raise RuntimeError
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.md"]


def test_a_suffix_ends_the_partial_name_and_the_partial_is_removed_on_an_error(tmp_path):
    target = tmp_path / "last.keras"
    with files.atomic_path(target, suffix=".keras") as partial:
        assert partial.name == f"last.keras.partial-{os.getpid()}.keras"
        partial.write_text("new")
    with pytest.raises(RuntimeError), files.atomic_path(target, suffix=".keras") as partial:
        partial.write_text("half")
        raise RuntimeError
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["last.keras"]


def test_processes_writing_the_same_file_do_not_collide(tmp_path):
    target = tmp_path / "flags.cfg"
    script = (
        "import sys\nfrom invariance_tf import files\n"
        "for i in range(200):\n    files.write_text(sys.argv[1], sys.argv[2] * 1000)\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(target), text], stderr=subprocess.PIPE, text=True)
        for text in "ab"
    ]
    for writer in writers:
        assert writer.wait(timeout=120) == 0, writer.stderr.read()[-2000:]
    assert target.read_text() in ("a" * 1000, "b" * 1000) and [p.name for p in tmp_path.iterdir()] == ["flags.cfg"]


def test_a_folder_is_flushed_and_renamed_whole(tmp_path, monkeypatch):
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or fsync(fd))
    with files.atomic_path(tmp_path / "epoch-3") as partial:
        partial.mkdir()
        (partial / "weights.h5").write_bytes(b"w")
        (partial / "meta.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "epoch-3").iterdir()) == ["meta.json", "weights.h5"]
    assert {Path(p).name for p in synced} >= {
        f"epoch-3.partial-{os.getpid()}",
        "weights.h5",
        "meta.json",
        tmp_path.name,
    }

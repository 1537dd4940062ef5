"""Outputs written atomically, never over an input, never mixed with an earlier run's files."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ascale import _outputs
from ascale._outputs import LOCK, MARKER, RunFolder, check_output_file, write_atomic, write_json
from ascale.errors import AscaleError


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = write_atomic(tmp_path / "metrics.json", "old\n")

    def half_then_fail(target, data):
        target.write_bytes(b"ne")
        raise OSError("disk full")

    monkeypatch.setattr(_outputs, "_write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_json_that_cannot_be_written_writes_nothing(tmp_path):
    with pytest.raises(AscaleError, match="cannot be written as JSON"):
        write_json(tmp_path / "m.json", {"x": {1, 2}})
    assert not any(tmp_path.iterdir())


def test_files_get_mode_0666_less_the_umask(tmp_path):
    umask = os.umask(0o027)
    try:
        path = write_atomic(tmp_path / "a.txt", b"x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_an_output_file_over_an_input_is_refused(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("{}\n")
    (tmp_path / "link.json").symlink_to(data)
    for out in (data, tmp_path / "link.json", tmp_path / "sub" / ".." / "rows.jsonl"):
        with pytest.raises(AscaleError, match="is the input"):
            check_output_file(out, [("--data", data)])
    with pytest.raises(AscaleError, match="is a folder"):
        check_output_file(tmp_path, [("--data", data)])
    check_output_file(tmp_path / "eval.json", [("--data", data)])


def test_a_run_that_fails_leaves_the_folder_as_it_was(tmp_path):
    with RunFolder(tmp_path / "run") as run:
        write_atomic(run.stage / "a.txt", "first")
    before = {p.name: p.read_bytes() for p in run.path.iterdir()}
    assert set(before) == {"a.txt", MARKER}
    with pytest.raises(RuntimeError), RunFolder(run.path, overwrite=True) as again:
        write_atomic(again.stage / "b.txt", "second")
        raise RuntimeError("late failure")
    assert {p.name: p.read_bytes() for p in run.path.iterdir()} == before
    with pytest.raises(KeyboardInterrupt), RunFolder(tmp_path / "new" / "deeper"):
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_replaces_the_earlier_run_whole(tmp_path):
    with RunFolder(tmp_path / "run") as run:
        write_atomic(run.stage / "old.txt", "old")
        (run.stage / "sub").mkdir()
    with RunFolder(run.path, overwrite=True) as again:
        write_atomic(again.stage / "new.txt", "new")
    assert sorted(p.name for p in run.path.iterdir()) == [MARKER, "new.txt"]


def test_a_lock_left_by_a_dead_run_says_so(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK).write_text(json.dumps({"pid": 2**22 + 12345, "started": "then"}))
    with pytest.raises(AscaleError, match="no longer running: delete the lock file"):
        RunFolder(folder).check()
    (folder / LOCK).write_text("garbage")
    with pytest.raises(AscaleError, match="is locked by another run"):
        RunFolder(folder).check()

"""Outputs written atomically, never over an input, never mixed with an earlier run's files."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ascale import _outputs
from ascale._outputs import LOCK, MARKER, check_output_file, write_atomic, write_json
from ascale.cli._runfolder import RunFolder
from ascale.errors import AscaleError, AscaleWarning


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
    with (
        pytest.raises(RuntimeError),
        pytest.warns(AscaleWarning, match="replacing"),
        RunFolder(run.path, overwrite=True) as again,
    ):
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
    with (
        pytest.warns(
            AscaleWarning, match=r"replacing the earlier run's 2 entries .*\(old.txt, sub\)"
        ),
        RunFolder(run.path, overwrite=True) as again,
    ):
        write_atomic(again.stage / "new.txt", "new")
    assert sorted(p.name for p in run.path.iterdir()) == [MARKER, "new.txt"]


def test_overwrite_refuses_files_the_earlier_run_did_not_write_naming_them(tmp_path):
    with RunFolder(tmp_path / "run") as run:
        write_atomic(run.stage / "metrics.json", "{}")
    (run.path / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in run.path.iterdir()}
    with pytest.raises(AscaleError, match=r"did not write \(notes.txt\)"):
        RunFolder(run.path, overwrite=True).check()
    assert {p.name: p.read_bytes() for p in run.path.iterdir()} == before
    # a file ascale wrote there later (evaluate's eval.json) is the run's: it is replaced
    (run.path / "notes.txt").unlink()
    _outputs.claim(write_json(run.path / "eval.json", {}))
    warns = pytest.warns(AscaleWarning, match=r"\(eval.json, metrics.json\)")
    with warns, RunFolder(run.path, overwrite=True) as again:
        write_atomic(again.stage / "metrics.json", "{}")
    assert sorted(p.name for p in run.path.iterdir()) == [MARKER, "metrics.json"]


def test_an_output_file_exists_or_is_no_regular_file(tmp_path):
    old = write_atomic(tmp_path / "eval.json", "old")
    with pytest.raises(AscaleError, match="exists; pass --overwrite"):
        check_output_file(old, [])
    check_output_file(old, [], overwrite=True)
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    for path, kind in (
        ("/dev/null", "is a character device"),
        (tmp_path / "broken", "is a link to .*nowhere', which does not exist"),
        (old / "x.json", "lies inside .*eval.json', which is a file"),
    ):
        with pytest.raises(AscaleError, match=kind):
            check_output_file(path, [], overwrite=True)
        with pytest.raises(AscaleError, match=kind):
            RunFolder(path, overwrite=True).check()
    assert old.read_text() == "old"


def _dead_pid() -> int:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(done.stdout)


def test_a_lock_left_by_a_dead_run_is_cleared_with_its_staging_folder(tmp_path):
    import socket

    folder = tmp_path / "run"
    (folder / ".ascale-staging-dead").mkdir(parents=True)
    (folder / ".ascale-staging-dead" / "half.json").write_text("{")
    info = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "then"}
    (folder / LOCK).write_text(json.dumps(info))
    warns = pytest.warns(AscaleWarning, match=rf"cleared the lock .*pid {info['pid']}")
    with warns, RunFolder(folder) as run:
        write_atomic(run.stage / "a.txt", "new")
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "a.txt"]


def test_a_lock_held_by_a_live_or_unknown_run_is_kept(tmp_path):
    import socket

    folder = tmp_path / "run"
    folder.mkdir()
    for info, message in (
        ({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}, "still running"),
        ({"pid": _dead_pid(), "host": "elsewhere", "started": "then"}, "on host 'elsewhere'"),
    ):
        (folder / LOCK).write_text(json.dumps(info))
        with pytest.raises(AscaleError, match=message):
            RunFolder(folder).check()
        assert (folder / LOCK).is_file()
    (folder / LOCK).write_text("garbage")
    with pytest.raises(AscaleError, match="unreadable"):
        RunFolder(folder).check()

"""The model cache (`ascale.loading.build_once`): concurrent first loads build one complete
folder, a dead builder's lock heals, and a failed build leaves nothing behind (issue 27)."""

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from ascale.errors import ModelNotAvailableError
from ascale.loading import build_once


def _slow_build(calls: list[str]):
    def build(tmp):
        calls.append(str(tmp))
        tmp.mkdir()
        (tmp / "config.json").write_text("{}")
        time.sleep(0.3)  # the others arrive while this one writes
        (tmp / "model.safetensors").write_bytes(b"weights")

    return build


def test_concurrent_first_loads_build_one_complete_folder(tmp_path):
    folder, calls, got, errors = tmp_path / "cache" / "model-abc", [], [], []

    def load():
        try:
            got.append(build_once(folder, _slow_build(calls)))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1 and got == [folder] * 4
    assert (folder / "model.safetensors").read_bytes() == b"weights"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["model-abc"]  # no lock, no tmp


def test_a_failed_or_interrupted_build_leaves_nothing(tmp_path):
    folder = tmp_path / "model-abc"

    def interrupted(tmp):
        tmp.mkdir()
        (tmp / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_once(folder, interrupted)
    assert list(tmp_path.iterdir()) == []


def test_a_dead_builders_lock_and_leftovers_are_cleared(tmp_path):
    folder = tmp_path / "model-abc"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    info = {"pid": int(dead.stdout), "host": socket.gethostname(), "started": "then"}
    (tmp_path / "model-abc.lock").write_text(json.dumps(info))
    (tmp_path / f".model-abc.tmp-{info['pid']}-0000").mkdir()  # its half-written model
    (tmp_path / "model-abc.tmp").mkdir()  # the fixed temporary name of before
    assert build_once(folder, _slow_build([])) == folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-abc"]


def test_a_live_builder_is_waited_for_then_named(tmp_path):
    folder = tmp_path / "model-abc"
    info = {"pid": 1, "host": socket.gethostname(), "started": "now"}  # init: always running
    (tmp_path / "model-abc.lock").write_text(json.dumps(info))
    with pytest.raises(ModelNotAvailableError, match="pid 1, started now, still running"):
        build_once(folder, _slow_build([]), wait_s=0.5)
    assert not folder.exists()

"""A command's ``--out`` folder (`RunFolder`): checked before any work, locked while the run
writes into a staging folder, filled with the run's files only when it succeeds, and left as it
was when the run fails or is interrupted. The rule for every output path, and the atomic
writes, are in `ascale._outputs`; the lock in `ascale._locks`.
"""

import json
import os
import secrets
import shutil
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from ascale import _locks
from ascale._outputs import LOCK, MARKER, _write_bytes, check_folder_path
from ascale.cli import _signals
from ascale.errors import AscaleError, AscaleWarning

__all__ = ["RunFolder"]

_STAGING = ".ascale-staging-"
_PREVIOUS = ".ascale-previous-"


class RunFolder:
    """A command's output folder, written as a unit when the run succeeds.

    Entering checks the folder before any work and locks it; the run writes into `stage`;
    leaving without an error moves the staged files in (the previous run's files, with
    ``overwrite``, go first: they are replaced, never mixed); leaving on an error, Ctrl-C or
    SIGTERM discards the staged files and leaves the folder as it was. Moving files in and
    cleaning up hold SIGINT and SIGTERM back until done (`ascale.cli._signals.deferred`).

    A finished run's marker (``.ascale-run.json``) lists the files it wrote (and `claim` adds
    later outputs of ascale, such as ``ascale evaluate``'s ``eval.json``): ``overwrite``
    replaces exactly those, names them (an `AscaleWarning`), and refuses a folder that also
    holds files no ascale run wrote, naming them. A lock whose process is gone (same host, pid
    no longer running) is cleared, with its staging folder, and said so.

    Args:
        path: the folder (``~`` is expanded); created if missing.
        overwrite: replace the files of the earlier ascale run in a non-empty folder.
        replace_any: with `overwrite`, replace a folder's contents even without the marker
            (for a default folder that belongs to ascale, such as the demo's).
        inputs: the run's input files and folders, by option name (``{"--data": path}``);
            a folder that holds one of them is refused, so no input is ever written over.
        flag: the option name used in messages.

    Example:
        >>> with RunFolder("out/run", overwrite=False, inputs={}) as run:
        ...     _ = (run.stage / "metrics.json").write_text("{}")
        >>> sorted(p.name for p in run.path.iterdir())  # the files, and the run's marker
        ['.ascale-run.json', 'metrics.json']
    """

    def __init__(
        self,
        path: str | Path,
        *,
        overwrite: bool = False,
        replace_any: bool = False,
        inputs: Mapping[str, str | Path | None] | None = None,
        flag: str = "--out",
    ) -> None:
        self.path = Path(path).expanduser()
        self.overwrite = overwrite
        self.replace_any = replace_any
        self.inputs = {k: Path(v).expanduser() for k, v in (inputs or {}).items() if v is not None}
        self.flag = flag
        self.stage = self.path / f"{_STAGING}{secrets.token_hex(4)}"
        self._created: list[Path] = []  # folders this run made, deepest first
        self.replaces: list[str] = []  # the earlier run's entries this run replaces

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, overwrite={self.overwrite})"

    def check(self) -> None:
        """Refuse, before any work: an existing file, an input inside, another run, old files."""
        out = f"{self.flag} {str(self.path)!r}"
        check_folder_path(self.path, self.flag)
        here = self.path.resolve()
        entries = {p.resolve() for p in self.path.iterdir()} if self.path.is_dir() else set()
        for option, given in self.inputs.items():
            source = given.resolve()
            if source == here or here in source.parents or source in entries:
                raise AscaleError(
                    f"{out} holds the input {str(given)!r} ({option}); outputs never go over or "
                    "beside an input: choose another folder"
                )
        lock = self.path / LOCK
        if lock.exists():
            self._heal(lock, out)
        names = sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []
        if not names:
            return
        if not self.overwrite:
            raise AscaleError(
                f"{out} is not empty ({_shown(names)}); pass --overwrite to replace an earlier "
                "run's files with this run's, or choose a new folder"
            )
        owned = _owned(self.path, names)
        if self.replace_any:
            owned = names
        if owned is None:
            raise AscaleError(
                f"{out} holds files no ascale run wrote ({_shown(names)}; no {MARKER}); "
                "--overwrite replaces only an earlier run's folder: choose another folder"
            )
        foreign = [n for n in names if n not in owned]
        if foreign:
            raise AscaleError(
                f"{out} holds files the earlier run did not write ({_shown(foreign)}); "
                "--overwrite replaces only that run's files: move these, or choose another folder"
            )
        self.replaces = [n for n in names if not n.startswith(".ascale")]
        if self.replaces:
            warnings.warn(
                f"--overwrite: replacing the earlier run's {len(self.replaces)} entries in "
                f"{out} when this run succeeds ({_shown(self.replaces)})",
                AscaleWarning,
                stacklevel=3,
            )

    def __enter__(self) -> "RunFolder":
        self.check()
        self._created = [p for p in (self.path, *self.path.parents) if not p.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        if not _locks.acquire(self.path / LOCK):
            raise AscaleError(_locked(f"{self.flag} {str(self.path)!r}", self.path / LOCK))
        os.mkdir(self.stage)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with _signals.deferred():
            if exc_type is None:
                self._commit()
            else:
                self._abort()

    def _heal(self, lock: Path, out: str) -> None:
        """Clear a lock whose run is gone, and that run's staging folder; refuse a live one."""
        dead = _locks.heal(lock)
        if dead is None:
            raise AscaleError(_locked(out, lock))
        for stale in self.path.glob(f"{_STAGING}*"):
            shutil.rmtree(stale, ignore_errors=True)
        warnings.warn(
            f"{out}: cleared the lock of a run that is no longer running (pid {dead['pid']}, "
            f"started {dead.get('started', '?')}) and its staging folder",
            AscaleWarning,
            stacklevel=4,
        )

    def _commit(self) -> None:
        files = sorted(p.name for p in self.stage.iterdir())
        done = {"argv": sys.argv, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "files": files}
        _write_bytes(self.stage / MARKER, json.dumps(done) + "\n")
        keep = {LOCK, self.stage.name}
        staged = {p.name for p in self.stage.iterdir()}
        previous = [  # the earlier run's files (checked), leftovers of ascale, and any clash
            p
            for p in self.path.iterdir()
            if p.name not in keep
            and (p.name in self.replaces or p.name.startswith(".ascale") or p.name in staged)
        ]
        trash = self.path / f"{_PREVIOUS}{secrets.token_hex(4)}"
        try:
            if previous:
                os.mkdir(trash)
                for p in previous:
                    os.rename(p, trash / p.name)
            for p in self.stage.iterdir():
                os.rename(p, self.path / p.name)
        except OSError as err:
            raise AscaleError(
                f"could not move this run's files into {str(self.path)!r} ({err}); the new "
                f"files are in {str(self.stage)!r}, the previous ones in {str(trash)!r}; "
                f"delete {LOCK} there when done"
            ) from err
        shutil.rmtree(trash, ignore_errors=True)
        self.stage.rmdir()
        _locks.release(self.path / LOCK)

    def _abort(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)
        _locks.release(self.path / LOCK)
        for folder in self._created:  # a failed run leaves no empty folders behind
            if any(folder.iterdir()):
                break
            folder.rmdir()


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f", ... ({len(names)} entries)" if len(names) > 5 else "")


def _owned(folder: Path, names: list[str]) -> list[str] | None:
    """The entries of `folder` an earlier ascale run wrote; ``None`` if no run wrote it."""
    if MARKER not in names:
        return names if all(n.startswith(".ascale") for n in names) else None
    try:
        files = json.loads((folder / MARKER).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return names  # a marker of before the file list: the whole folder was the run's
    return [n for n in names if n in files or n.startswith(".ascale")]


def _locked(out: str, lock: Path) -> str:
    return (
        f"another ascale run is writing into {out} ({_locks.describe(lock)}); wait for it or "
        "choose another folder"
    )

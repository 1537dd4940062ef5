"""Writing outputs so that nothing is lost and nothing is half-written.

- `write_atomic` writes one file: to a temporary sibling first, then `os.replace` onto the name,
  so a reader sees the old file or the new one, never a part of either.
- `write_json` serialises before it writes: a value JSON cannot hold fails with nothing written.
- `write_folder` writes files that belong together (an intervention's tensors and metadata) into
  a temporary sibling folder, then puts that folder in place as a unit.
- `RunFolder` is a command's ``--out`` folder: checked before any work (an existing file, an
  input inside it, a non-empty folder without ``overwrite``, another run's lock), locked while
  the run writes into a staging folder, and filled with the run's files only when it succeeds.

Every file is created with mode ``0o666`` less the umask (``0644`` under the usual ``022``).
"""

import json
import os
import secrets
import shutil
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from ascale.errors import AscaleError, AscaleWarning

__all__ = [
    "RunFolder",
    "check_output_file",
    "dumps_json",
    "write_atomic",
    "write_folder",
    "write_json",
]

LOCK = ".ascale.lock"
MARKER = ".ascale-run.json"  # written into a run's folder: what wrote it, and when
_STAGING = ".ascale-staging-"
_PREVIOUS = ".ascale-previous-"


def dumps_json(obj: Any, *, what: str = "the output") -> str:
    """`obj` as indented JSON text; `AscaleError` naming `what` if JSON cannot hold it."""
    try:
        return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as err:
        raise AscaleError(f"{what} cannot be written as JSON: {err}") from err


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write `data` to `path` through a temporary sibling and `os.replace`; returns the path.

    Example:
        >>> write_atomic("out/notes.txt", "all good\\n").read_text()
        'all good\\n'
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise AscaleError(f"{str(path)!r} is a folder; expected a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        _write_bytes(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """`obj` as indented JSON at `path`, atomically; nothing is written if it is not JSON."""
    return write_atomic(path, dumps_json(obj, what=str(path)))


def check_output_file(
    path: str | Path, inputs: Iterable[tuple[str, str | Path]], flag: str = "--out"
) -> None:
    """Refuse an output file that is a folder or resolves to an input (``(option, path)`` pairs).

    Example:
        >>> check_output_file("eval.json", [("--data", "rows.jsonl")])  # a new file: fine
        >>> check_output_file("rows.jsonl", [("--data", "rows.jsonl")])
        Traceback (most recent call last):
        ...
        ascale.errors.AscaleError: --out 'rows.jsonl' is the input 'rows.jsonl' (--data); ...
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise AscaleError(f"{flag} {str(path)!r} is a folder; name a file, such as eval.json")
    for option, given in inputs:
        if path.resolve() == Path(given).expanduser().resolve():
            raise AscaleError(
                f"{flag} {str(path)!r} is the input {str(given)!r} ({option}); outputs "
                "never go over an input: name another file"
            )


def write_folder(folder: str | Path, files: Mapping[str, bytes | str]) -> Path:
    """Write `files` (name -> content) into `folder` as a unit; returns the folder.

    The files go into a temporary sibling folder first. A new folder, or one that holds nothing
    but these file names (an earlier save), is then swapped in whole, so a failure at any point
    leaves the earlier folder intact. A folder that also holds other files keeps them (with an
    `AscaleWarning` naming them) and gets each new file by `os.replace`, in the order given.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise AscaleError(f"{str(folder)!r} is a file, not a folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = _sibling(folder, "tmp")
    os.mkdir(stage)
    try:
        for name, data in files.items():
            _write_bytes(stage / name, data)
        if not folder.exists():
            os.rename(stage, folder)
            return folder
        others = sorted(set(os.listdir(folder)) - set(files))
        if not others:
            _swap(stage, folder)
            return folder
        warnings.warn(
            f"{str(folder)!r} also holds {others}; they are kept, and may belong to an earlier "
            "run: save into a new or empty folder to keep outputs apart",
            AscaleWarning,
            stacklevel=3,
        )
        for name in files:
            os.replace(stage / name, folder / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return folder


def _swap(new: Path, folder: Path) -> None:
    """Put folder `new` in the place of `folder`; `folder` is back if that fails."""
    aside = _sibling(folder, "old")
    os.rename(folder, aside)
    try:
        os.rename(new, folder)
    except BaseException:
        os.rename(aside, folder)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{secrets.token_hex(4)}")


def _write_bytes(path: Path, data: bytes | str) -> None:
    """Create `path` (mode 0o666 less the umask) with `data`, flushed to disk."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())


class RunFolder:
    """A command's output folder, written as a unit when the run succeeds.

    Entering checks the folder before any work and locks it; the run writes into `stage`;
    leaving without an error moves the staged files in (the previous run's files, with
    ``overwrite``, go first: they are replaced, never mixed); leaving on an error or Ctrl-C
    discards the staged files and leaves the folder as it was.

    Args:
        path: the folder (``~`` is expanded); created if missing.
        overwrite: replace the contents of a non-empty folder that an earlier ascale run
            wrote (it holds the marker file ``.ascale-run.json``); other folders are refused.
        replace_any: with `overwrite`, replace a folder's contents even without the marker
            (for a default folder that belongs to ascale, such as the demo's).
        inputs: the run's input files and folders, by option name (``{"--data": path}``);
            a folder that holds one of them is refused, so no input is ever written over.
        flag: the option name used in messages.

    Example:
        >>> with RunFolder("out/run", overwrite=False, inputs={}) as run:
        ...     _ = write_json(run.stage / "metrics.json", {"flip_rate_forward": 0.5})
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

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, overwrite={self.overwrite})"

    def check(self) -> None:
        """Refuse, before any work: an existing file, an input inside, another run, old files."""
        out = f"{self.flag} {str(self.path)!r}"
        if self.path.exists() and not self.path.is_dir():
            raise AscaleError(f"{out} is an existing file; name a folder (new or empty)")
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
            raise AscaleError(_locked_message(out, lock))
        if not entries:
            return
        names = sorted(p.name for p in self.path.iterdir())
        shown = ", ".join(names[:5]) + (f", ... ({len(names)} entries)" if len(names) > 5 else "")
        if not self.overwrite:
            raise AscaleError(
                f"{out} is not empty ({shown}); pass --overwrite to replace an earlier run's "
                "files with this run's, or choose a new folder"
            )
        ours = MARKER in names or all(n.startswith(".ascale") for n in names)
        if not (self.replace_any or ours):
            raise AscaleError(
                f"{out} holds files no ascale run wrote ({shown}; no {MARKER}); --overwrite "
                "replaces only an earlier run's folder: choose another folder"
            )

    def __enter__(self) -> "RunFolder":
        self.check()
        self._created = [p for p in (self.path, *self.path.parents) if not p.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "argv": sys.argv, "started": time.strftime("%Y-%m-%d %H:%M")}
        try:
            fd = os.open(self.path / LOCK, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            raise AscaleError(
                _locked_message(f"{self.flag} {str(self.path)!r}", self.path / LOCK)
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(info, f)
        os.mkdir(self.stage)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._commit()
        else:
            self._abort()

    def _commit(self) -> None:
        done = {"argv": sys.argv, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        _write_bytes(self.stage / MARKER, json.dumps(done) + "\n")
        keep = {LOCK, self.stage.name}
        previous = [p for p in self.path.iterdir() if p.name not in keep]
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
        (self.path / LOCK).unlink(missing_ok=True)

    def _abort(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)
        (self.path / LOCK).unlink(missing_ok=True)
        for folder in self._created:  # a failed run leaves no empty folders behind
            if any(folder.iterdir()):
                break
            folder.rmdir()


def _locked_message(out: str, lock: Path) -> str:
    try:
        info = json.loads(lock.read_text(encoding="utf-8"))
        pid, started = int(info["pid"]), info.get("started", "?")
    except (OSError, ValueError, KeyError, TypeError):
        return f"{out} is locked by another run ({str(lock)!r}); delete it if no run is writing"
    running = _is_running(pid)
    state = "still running" if running else "no longer running: delete the lock file"
    return (
        f"another ascale run (pid {pid}, started {started}) is writing into {out}; wait for it "
        f"or choose another folder (lock file {str(lock)!r}; that process is {state})"
    )


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True

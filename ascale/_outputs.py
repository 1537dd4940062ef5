"""Writing outputs so that nothing is lost and nothing is half-written.

- `write_atomic` writes one file: to a temporary sibling first, then `os.replace` onto the name,
  so a reader sees the old file or the new one, never a part of either.
- `write_json` serialises before it writes: a value JSON cannot hold fails with nothing written.
- `write_folder` writes files that belong together (an intervention's tensors and metadata) into
  a temporary sibling folder, then puts that folder in place as a unit.
- One rule for every output path: an output never goes over an input, nor over anything but a
  regular file or folder (a device, a broken link), and never over an existing file without
  ``overwrite`` (`check_output_file`, `check_folder_path`); a command's ``--out`` folder is an
  `ascale.cli._runfolder.RunFolder`, which replaces only what an earlier run wrote (`claim`).

Every file is created with mode ``0o666`` less the umask (``0644`` under the usual ``022``).
"""

import json
import os
import secrets
import shutil
import stat
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ascale.errors import AscaleError, AscaleWarning

__all__ = [
    "check_folder_path",
    "check_output_file",
    "claim",
    "dumps_json",
    "write_atomic",
    "write_folder",
    "write_json",
]

LOCK = ".ascale.lock"
MARKER = ".ascale-run.json"  # written into a run's folder: what wrote it, and when


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
    path: str | Path,
    inputs: Iterable[tuple[str, str | Path]],
    flag: str = "--out",
    *,
    overwrite: bool = False,
) -> None:
    """Refuse an output file that is an input (``(option, path)`` pairs), not a regular file
    (a folder, a device, a broken link), or exists without `overwrite`.

    Example:
        >>> check_output_file("eval.json", [("--data", "rows.jsonl")])  # a new file: fine
        >>> check_output_file("rows.jsonl", [("--data", "rows.jsonl")])
        Traceback (most recent call last):
        ...
        ascale.errors.AscaleError: --out 'rows.jsonl' is the input 'rows.jsonl' (--data); ...
    """
    path = Path(path).expanduser()
    out = f"{flag} {str(path)!r}"
    if path.is_dir():
        raise AscaleError(f"{out} is a folder; name a file, such as eval.json")
    for option, given in inputs:
        if path.resolve() == Path(given).expanduser().resolve():
            raise AscaleError(
                f"{out} is the input {str(given)!r} ({option}); outputs "
                "never go over an input: name another file"
            )
    _check_parents(path, out)
    if not (path.exists() or path.is_symlink()):
        return
    kind = _kind(path)
    if kind != "a file":
        raise AscaleError(f"{out} is {kind}; name a new file, such as eval.json")
    if not overwrite:
        raise AscaleError(f"{out} exists; pass --overwrite to replace it, or name a new file")


def check_folder_path(path: Path, flag: str = "--out") -> None:
    """Refuse an output folder path that names something other than a folder: a file, a
    device, a broken link, or a path through a file."""
    out = f"{flag} {str(path)!r}"
    _check_parents(path, out)
    if path.is_dir():
        return
    if path.exists() or path.is_symlink():
        kind = _kind(path)
        what = "an existing file" if kind == "a file" else kind
        raise AscaleError(f"{out} is {what}; name a folder (new or empty)")


def _kind(path: Path) -> str:
    """What is at `path`, in words (it exists, or is a link)."""
    if path.is_symlink() and not path.exists():
        return f"a link to {os.readlink(path)!r}, which does not exist"
    mode = path.stat().st_mode
    for test, word in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISREG, "a file"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return word
    return "not a regular file"


def _check_parents(path: Path, out: str) -> None:
    for parent in path.absolute().parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise AscaleError(f"{out} lies inside {str(parent)!r}, which is {_kind(parent)}")
            return


def claim(path: str | Path) -> None:
    """Record `path`, a file ascale wrote into an earlier run's folder (``ascale evaluate``'s
    ``eval.json``), in that folder's marker: ``--overwrite`` then replaces it with the run's
    files instead of refusing it as someone else's."""
    path = Path(path).expanduser()
    marker = path.parent / MARKER
    try:
        done = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # not a run's folder (or an unreadable marker, which --overwrite treats whole)
    files = done.get("files") if isinstance(done, dict) else None
    if isinstance(files, list) and path.name not in files:
        done["files"] = sorted([*files, path.name])
        write_atomic(marker, json.dumps(done) + "\n")


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

"""The rows of a contrast set as plain data, before any model: reading jsonl and checking rows.

A row is ``{"prompt": ..., "correct": ..., "wrong": ...}``, optionally with ``"corrupted"`` (a
counterfactual prompt); `ascale.data.ContrastSet` tokenises checked rows for one model.
"""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ascale import _checks
from ascale.errors import AscaleError

__all__ = ["CORRUPTED", "FIELDS", "check_row", "has_corrupted", "read_jsonl", "short"]

FIELDS = ("prompt", "correct", "wrong")
CORRUPTED = "corrupted"  # the optional counterfactual prompt of a row


def read_jsonl(
    path: str | Path, *, flag: str | None = None, fields: Sequence[str] = FIELDS
) -> list[dict[str, str]]:
    """The rows of a jsonl contrast set, checked as far as that needs no model.

    `flag` names the option the path came from (``"--data"``), for the messages; `fields`
    are the string fields every row needs (``("prompt",)`` for prompts to continue).

    Raises:
        AscaleError: the file is missing, a folder or no regular file (a device, a pipe),
            cannot be read (permissions), is not UTF-8, not JSON, or holds no rows; a row is
            not an object with string fields ``prompt``, ``correct`` and ``wrong``, has an
            empty one or a key twice; some rows carry ``corrupted`` and others not. The message
            names the file (and `flag`) and the line or row.

    Example:
        >>> rows = read_jsonl(data.to_jsonl("ioi.jsonl"))
        >>> sorted(rows[0])
        ['correct', 'prompt', 'wrong']
    """
    path = _checks.path(flag or "path", path)
    label = f"{flag} {str(path)!r}" if flag else f"data file {str(path)!r}"
    _check_readable(path, label)
    try:
        with path.open("rb") as f:
            rows = [
                row
                for lineno, raw in enumerate(f, start=1)
                if (row := _parse_line(raw, lineno, path)) is not None
            ]
    except OSError as err:
        raise AscaleError(f"{label} cannot be read ({err.strerror or err})") from None
    for i, (where, row) in enumerate(rows):
        check_row(row, f"{where} (row {i})", fields)
    if not rows:
        raise AscaleError(f"{label} holds no rows; expected one JSON object a line")
    plain = [row for _, row in rows]
    has_corrupted(plain, where=str(path))
    return plain


def _check_readable(path: Path, label: str) -> None:
    """Refuse a path that is missing, a folder, or no regular file (a device or a pipe, which
    would be read forever or block), before opening it."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AscaleError(f"{label} does not exist") from None
    except OSError as err:
        raise AscaleError(f"{label} cannot be read ({err.strerror or err})") from None
    if stat.S_ISDIR(mode):
        raise AscaleError(f"{label} is a folder; expected a jsonl file")
    if not stat.S_ISREG(mode):
        kinds = {stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}
        kinds |= {stat.S_ISFIFO: "a named pipe", stat.S_ISSOCK: "a socket"}
        kind = next((k for test, k in kinds.items() if test(mode)), "no regular file")
        raise AscaleError(f"{label} is {kind}; expected a jsonl file")


def _parse_line(raw: bytes, lineno: int, path: Path) -> tuple[str, Any] | None:
    """Line `lineno` as ``(where, JSON value)``; ``None`` for a blank line."""
    where = f"{path}:{lineno}"
    try:
        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as err:
        raise AscaleError(
            f"{where}: not UTF-8 text (byte {raw[err.start]:#04x} at column "
            f"{err.start + 1}); save the file as UTF-8"
        ) from None
    if not line.strip():
        return None
    try:
        return where, json.loads(line, object_pairs_hook=lambda pairs: _unique(pairs, where))
    except json.JSONDecodeError as err:
        raise AscaleError(f"{where}: not valid JSON ({err.msg})") from None


def _unique(pairs: list[tuple[str, Any]], where: str) -> dict[str, Any]:
    """A JSON object's pairs as a dict, refusing a key given twice (JSON keeps the last)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise AscaleError(
                f"{where}: key {key!r} appears twice ({short(seen[key], 30)} and "
                f"{short(value, 30)}); keep one"
            )
        seen[key] = value
    return seen


def check_row(row: Any, where: str, fields: Sequence[str] = FIELDS) -> None:
    """Raise `AscaleError` (naming `where`) unless `row` has the non-empty string `fields`
    (and, if it carries ``corrupted``, a non-empty string there too)."""
    if not isinstance(row, Mapping):
        raise AscaleError(f"{where}: expected an object with keys {list(fields)}, got {short(row)}")
    missing = [k for k in fields if k not in row]
    if missing:
        raise AscaleError(f"{where} misses key(s) {missing}: {short(dict(row))}")
    given = [k for k in FIELDS if k in row] if tuple(fields) != FIELDS else list(FIELDS)
    keys = (*given, CORRUPTED) if CORRUPTED in row else given
    for key in keys:
        value = row[key]
        if not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            raise AscaleError(
                f"{where}: field {key!r} is {kind} {short(value)}, not a string; quote it"
            )
        if not value:
            raise AscaleError(f"{where}: field {key!r} is empty")


def has_corrupted(rows: Sequence[Mapping[str, Any]], *, where: str = "the rows") -> bool:
    """Whether the rows carry counterfactual prompts (``"corrupted"``): all of them, or none.

    Raises:
        AscaleError: some rows carry one and others do not; the message names the first row
            that differs from row 0.

    Example:
        >>> has_corrupted([{"prompt": "a", "correct": " b", "wrong": " c", "corrupted": "d"}])
        True
    """
    first = bool(rows) and CORRUPTED in rows[0]
    for i, row in enumerate(rows):
        if (CORRUPTED in row) != first:
            have, lack = (0, i) if first else (i, 0)
            raise AscaleError(
                f"{where}: row {have} carries a {CORRUPTED!r} prompt but row {lack} does not; "
                f"give every row one (a counterfactual of the same token length) or none"
            )
    return first


def short(value: Any, n: int = 60) -> str:
    """`value`'s repr, cut to `n` characters."""
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."

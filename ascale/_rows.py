"""The rows of a contrast set as plain data, before any model: reading jsonl and checking rows.

A row is ``{"prompt": ..., "correct": ..., "wrong": ...}``, optionally with ``"corrupted"`` (a
counterfactual prompt); `ascale.data.ContrastSet` tokenises checked rows for one model.
"""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ascale.errors import AscaleError

__all__ = ["CORRUPTED", "FIELDS", "check_row", "has_corrupted", "read_jsonl", "short"]

FIELDS = ("prompt", "correct", "wrong")
CORRUPTED = "corrupted"  # the optional counterfactual prompt of a row


def read_jsonl(path: str | Path) -> list[dict[str, str]]:
    """The rows of a jsonl contrast set, checked as far as that needs no model.

    Raises:
        AscaleError: the file is missing, a folder, not UTF-8, not JSON, or holds no rows; a
            row is not an object with string fields ``prompt``, ``correct`` and ``wrong``, or
            has an empty one; some rows carry ``corrupted`` and others not. The message names
            the file and the line or row.

    Example:
        >>> rows = read_jsonl(data.to_jsonl("ioi.jsonl"))
        >>> sorted(rows[0])
        ['correct', 'prompt', 'wrong']
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise AscaleError(f"data file {str(path)!r} does not exist")
    if not path.is_file():
        raise AscaleError(f"data file {str(path)!r} is a folder; expected a jsonl file")
    rows: list[dict[str, str]] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise AscaleError(
                    f"{where}: not UTF-8 text (byte {raw[err.start]:#04x} at column "
                    f"{err.start + 1}); save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise AscaleError(f"{where}: not valid JSON ({err.msg})") from None
            check_row(row, f"{where} (row {len(rows)})")
            rows.append(row)
    if not rows:
        raise AscaleError(f"data file {str(path)!r} holds no rows; expected one JSON object a line")
    has_corrupted(rows, where=str(path))
    return rows


def check_row(row: Any, where: str) -> None:
    """Raise `AscaleError` (naming `where`) unless `row` has three non-empty string fields
    (and, if it carries ``corrupted``, a non-empty string there too)."""
    if not isinstance(row, Mapping):
        raise AscaleError(f"{where}: expected an object with keys {list(FIELDS)}, got {short(row)}")
    missing = [k for k in FIELDS if k not in row]
    if missing:
        raise AscaleError(f"{where} misses key(s) {missing}: {short(dict(row))}")
    keys = (*FIELDS, CORRUPTED) if CORRUPTED in row else FIELDS
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

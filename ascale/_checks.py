"""The checks every public entry point runs on its plain arguments, before any work: one
message per kind of mistake, naming the argument, the value given and what would be valid.

A user's value is checked as users pass it (the test run's annotation checks see more): a
float where a whole number belongs (``1.5`` must not become ``1``), a boolean where a number
belongs, a string where a list belongs (``"random"`` is not the list ``["r", "a", ...]``), a
finite Python float that float32 cannot hold (``1e39`` becomes ``inf`` in a tensor).

Example:
    >>> whole("batch_size", 8)
    8
    >>> names("methods", "scalars,random")
    ['scalars', 'random']
"""

import math
import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ascale.errors import AscaleError, closest

__all__ = [
    "FLOAT32_MAX",
    "SQUARE_MAX",
    "finite",
    "instance",
    "is_number",
    "names",
    "path",
    "real",
    "sizes",
    "whole",
]

#: the largest magnitude a float32 tensor holds; a Python float beyond it becomes ``inf``
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
#: the largest activation whose square float32 holds: a layer norm squares the residual, and
#: beyond this its variance is infinite and the norm turns everything after it to 0 or NaN
SQUARE_MAX = math.sqrt(FLOAT32_MAX)


def is_number(value: Any) -> bool:
    """Whether `value` is a real number (an int or a float, not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def instance(name: str, value: Any, kind: type | tuple[type, ...], how: str = "") -> Any:
    """`value` if it is a `kind`; else an `AscaleError` naming `name`, the type given and
    `how` to make one."""
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        wanted = " or ".join(k.__name__ for k in kinds)
        wanted = ("an " if wanted[0] in "AEIOU" else "a ") + wanted
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        hint = f" ({how})" if how else ""
        raise AscaleError(f"{name} must be {wanted}{hint}, got {type(value).__name__} {shown}")
    return value


def path(name: str, value: Any) -> Path:
    """`value` as a `Path` (``~`` expanded): a string or a path, not empty."""
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise AscaleError(f"{name} must be a file or folder path (a string), got {value!r}")
    return Path(value).expanduser()


def whole(name: str, value: Any, *, low: int = 1, high: int | None = None, why: str = "") -> int:
    """`value` as an int: a whole number (not a bool, not a float) in ``low..high``.

    `why` says what the bounds are (``"the grid's components"``), for the message.
    """
    bounds = f"{low}..{high}" if high is not None else f"{low} or more"
    where = f" ({why})" if why else ""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise AscaleError(f"{name} must be a whole number of {bounds}{where}, got {value!r}")
    number = int(value)
    if number < low or (high is not None and number > high):
        raise AscaleError(f"{name} must be a whole number of {bounds}{where}, got {number}")
    return number


def real(
    name: str,
    value: Any,
    *,
    low: float = -FLOAT32_MAX,
    high: float = FLOAT32_MAX,
    open_low: bool = False,
) -> float:
    """`value` as a float: a finite number (not a bool) that float32 holds, in ``[low, high]``
    (``(low, high]`` with `open_low`)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    number = float(value) if ok else math.nan
    above = number > low if open_low else number >= low
    if not (math.isfinite(number) and above and number <= high):
        bracket = "(" if open_low else "["
        raise AscaleError(
            f"{name} must be a finite number in {bracket}{low:g}, {high:g}] (float32 holds "
            f"magnitudes up to {FLOAT32_MAX:.3g}), got {value!r}"
        )
    return number


def names(
    name: str, value: Any, *, allowed: Collection[str] | None = None, what: str = "name"
) -> list[str]:
    """A string (comma-separated) or a sequence of strings, each once, each one of `allowed`
    (when given): the list of names (`what` one is, for the message: ``"method"``)."""
    if isinstance(value, str):
        picked = [piece.strip() for piece in value.split(",")]
    elif isinstance(value, Iterable) and not isinstance(value, bytes | dict):
        picked = list(value)
    else:
        picked = [value]
    listed = f"; choose from {list(allowed)}" if allowed is not None else ""
    bad = [n for n in picked if not isinstance(n, str) or not n]
    if bad or not picked:
        raise AscaleError(
            f"{name} must be a {what} or a list of them (or one comma-separated string), got "
            f"{value!r}{listed}"
        )
    if allowed is not None:
        for n in picked:
            if n not in allowed:
                raise AscaleError(
                    f"{name}: unknown {what} {n!r}{listed} (closest: {closest(n, allowed)})"
                )
    if len(set(picked)) != len(picked):
        raise AscaleError(
            f"{name} names {sorted({n for n in picked if picked.count(n) > 1})} twice"
        )
    return picked


def sizes(name: str, value: Any, *, high: int | None = None, why: str = "") -> tuple[int, ...]:
    """A sequence of whole numbers of 1 or more (at most `high`), as a tuple."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
        raise AscaleError(f"{name} must be a list of whole numbers, got {value!r}")
    return tuple(whole(f"each of {name}", k, high=high, why=why) for k in value)


def finite(what: str, values: torch.Tensor, cause: str) -> None:
    """Refuse NaN or infinite `values` (`what` they are), saying `cause`: what to change."""
    if not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise AscaleError(f"{what} hold {bad} NaN or infinite value(s): {cause}")

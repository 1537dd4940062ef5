"""The values of the ``ascale`` command's options, each checked as it is parsed: a malformed one
is an `argparse.ArgumentTypeError` naming the value and what would be valid (the parser turns
it into one line, status 2)."""

import argparse
import math
from collections.abc import Callable
from typing import Any


def whole(minimum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or (minimum is not None and value < minimum):
            floor = "" if minimum is None else f" of {minimum} or more"
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number{floor}")
        return value

    return parse


def real(what: str, ok: Callable[[float], bool] = lambda x: True) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


def list_of(item: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    """A comma-separated list, each piece parsed by `item`."""

    def parse(text: str) -> list[Any]:
        try:
            return [item(piece.strip()) for piece in text.split(",")]
        except argparse.ArgumentTypeError as err:
            raise argparse.ArgumentTypeError(f"{err} in {text!r}; expected {what}") from None

    return parse


def layer_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        what = "comma-separated layer numbers, such as '0,1' or '-1'"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def position_list(text: str) -> str | list[int]:
    from ascale.errors import AscaleError
    from ascale.grid import parse_positions

    try:
        chosen = parse_positions(text)
    except AscaleError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return chosen if isinstance(chosen, str) else list(chosen)


def site_list(text: str) -> str:
    from ascale.errors import UnknownSiteError
    from ascale.sites import parse_site

    for name in (s.strip() for s in text.split(",")):
        try:
            parse_site(name)
        except UnknownSiteError as err:
            raise argparse.ArgumentTypeError(f"{err} (in {text!r})") from None
    return text


def method_names(
    choices: tuple[str, ...] | list[str], listed: str | None = None
) -> Callable[[str], list[str]]:
    """A comma-separated list of names from `choices`, each once (`listed`: how a mistake's
    message lists them; default the names, comma-separated)."""
    from ascale.errors import closest

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",")]
        for name in names:
            if name not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown method {name!r} in {text!r}; methods are {listed or ', '.join(choices)} "
                    f"(closest: {closest(name, choices)})"
                )
        if len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(f"{text!r} names a method twice")
        return names

    return parse


def prompt_text(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("the prompt is empty; give the text to continue")
    return text


POSITIVE = real("a finite number above 0, such as 0.1", lambda x: x > 0)
NON_NEGATIVE = real("a finite number of 0 or more", lambda x: x >= 0)
SHARE = real("a share between 0 and 1 (both excluded), such as 0.3", lambda x: 0 < x < 1)
FINITE = real("a finite number, such as 1 or -0.5")
UNIT = real("a number in (0, 1], such as 0.9", lambda x: 0 < x <= 1)


def device_name(text: str) -> str:
    from ascale.errors import AscaleError
    from ascale.loading import parse_device

    try:
        return str(parse_device(text))
    except AscaleError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def device_map(text: str) -> str | dict[str, Any]:
    import json

    names = ("auto", "balanced", "balanced_low_0", "sequential")
    if text in names:
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or not value:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither {', '.join(names)} nor a JSON object of module name -> "
            'device, such as \'{"model.embed_tokens": 0, "model.layers.0": 0, ...}\''
        )
    return value

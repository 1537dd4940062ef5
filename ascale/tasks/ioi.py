"""Indirect Object Identification (Wang et al., 2023): name the one who was not the subject.

``"When Mary and John went to the store, John gave a drink to"`` -> correct ``" Mary"`` (the
indirect object), wrong ``" John"`` (the subject). ABBA orders the first clause IO-then-S,
BABA S-then-IO; the subject is repeated either way.
"""

import random
import re
from collections.abc import Iterator, Sequence
from functools import cache, partial
from importlib.resources import files

from ascale import _tl
from ascale._types import HookedModel
from ascale.data import ContrastSet
from ascale.errors import AscaleError
from ascale.tasks._common import SAMPLE, check_count, corrupt, mentions, pick_length, templates_for

__all__ = ["IOI_TEMPLATES", "ioi", "ioi_corrupt"]

# Written in ABBA form: {A} is the indirect object (the answer), {B} the subject. Each template
# holds "{A} and {B}" once and {B} once more; BABA swaps that first pair.
IOI_TEMPLATES: tuple[str, ...] = (
    "When {A} and {B} went to the store, {B} gave a drink to",
    "When {A} and {B} went to the park, {B} gave a ball to",
    "Then, {A} and {B} went to the school. {B} gave a book to",
    "Then, {A} and {B} had a lot of fun at the hospital. {B} gave a ring to",
    "Then, {A} and {B} were working at the office. {B} decided to give a letter to",
    "Then, {A} and {B} had a long argument, and afterwards {B} said to",
    "After {A} and {B} went to the garden, {B} gave a snack to",
    "When {A} and {B} got a necklace at the restaurant, {B} decided to give it to",
    "While {A} and {B} were working at the house, {B} gave a basketball to",
    "While {A} and {B} were commuting to the station, {B} gave a computer to",
    "After the lunch, {A} and {B} went to the station. {B} gave a drink to",
    "Afterwards, {A} and {B} went to the restaurant. {B} gave a sandwich to",
)

ORDERS = ("ABBA", "BABA")


@cache
def _names() -> tuple[str, ...]:
    text = files("ascale.tasks").joinpath("names.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _single_token_names(model: HookedModel) -> list[str]:
    return [n for n in _names() if len(_tl.answer_token_ids(model, " " + n)) == 1]


def _fill(template: str, order: str, io: str, s: str) -> str:
    if order == "BABA":
        template = template.replace("{A} and {B}", "{B} and {A}", 1)
    return template.format(A=io, B=s)


def _check_template(t: str) -> None:
    if t.count("{A} and {B}") != 1 or t.count("{A}") != 1 or t.count("{B}") != 2:
        raise AscaleError(
            f"IOI template {t!r} needs '{{A}} and {{B}}' once and {{B}} once more, as in "
            "'When {A} and {B} went to the store, {B} gave a drink to'"
        )


def ioi(
    model: HookedModel,
    *,
    n: int = 200,
    seed: int = 0,
    length: int | str | None = "modal",
    orders: Sequence[str] = ORDERS,
    templates: str | Sequence[str] | None = None,
) -> ContrastSet:
    """Indirect Object Identification prompts, ABBA and BABA interleaved.

    Names are drawn from the embedded list, keeping those that are one token for the model
    (with the leading space); name pairs and templates are sampled with ``random.Random(seed)``.

    Args:
        model: the model whose tokenizer decides single tokens and lengths.
        n: at most this many prompts.
        seed: sampling seed; the same seed gives the same set.
        length: ``"modal"`` keeps the most common token length (among at most 3000 sampled
            candidates), an int keeps only that length, ``None`` keeps every length.
        orders: ``"ABBA"`` and/or ``"BABA"``; with both, rows alternate between them.
        templates: ``None`` for ``IOI_TEMPLATES[0]`` only, ``"all"`` for every template in
            `IOI_TEMPLATES`, or your own templates in the same ABBA form.

    Returns:
        A `ContrastSet` with the indirect object as correct and the subject as wrong answer.

    Raises:
        AscaleError: an unknown order, a malformed template, or no prompt of the length.

    Example:
        >>> data = ioi(model, n=100)
        >>> data.prompts[0], data.correct[0], data.wrong[0]
        ('When Alice and Bob went to the store, Bob gave a drink to', ' Alice', ' Bob')
    """
    chosen = templates_for(n, templates, IOI_TEMPLATES, _check_template)
    orders = tuple(orders)
    if not orders or any(o not in ORDERS for o in orders):
        raise AscaleError(f"orders must be a non-empty selection of {ORDERS}, got {orders!r}")
    names = _single_token_names(model)
    per_order = -(-n // len(orders)) if length is None else SAMPLE // len(orders)
    pools = _sample(names, random.Random(seed), chosen, orders, per_order)
    flat = [row for pool in pools for row in pool]
    keep, target = pick_length(model, [p for p, _, _ in flat], length)
    rows = _alternate(pools, set(keep), n)
    if not rows:
        raise AscaleError(
            f"no IOI prompt has {target} tokens for this model ({len(flat)} candidate(s) "
            "tried); try length='modal', length=None or other templates"
        )
    check_count("ioi", n, len(rows), target)
    return ContrastSet.from_rows(rows, model)


# a sampled prompt: (prompt, indirect object, subject)
_Sampled = tuple[str, str, str]


def _sample(
    names: list[str],
    rng: random.Random,
    templates: tuple[str, ...],
    orders: tuple[str, ...],
    per_order: int,
) -> list[list[_Sampled]]:
    """Up to `per_order` distinct prompts for each order in turn (20 draws of a name pair and a
    template per prompt wanted, at most), all drawn from `rng`."""
    pools = []
    for order in orders:
        seen: set[tuple[str, str, str]] = set()
        pool: list[_Sampled] = []
        for _ in range(20 * per_order):
            if len(pool) >= per_order:
                break
            io, s = rng.sample(names, 2)
            key = (rng.choice(templates), io, s)
            if key not in seen:
                seen.add(key)
                pool.append((_fill(key[0], order, io, s), io, s))
        pools.append(pool)
    return pools


def _alternate(pools: list[list[_Sampled]], kept: set[int], n: int) -> list[dict[str, str]]:
    """The rows of the kept prompts (`kept` indexes the pools one after another), taking one
    from each order in turn, at most `n`."""
    by_order, start = [], 0
    for pool in pools:
        by_order.append([p for j, p in enumerate(pool) if start + j in kept])
        start += len(pool)
    rows: list[dict[str, str]] = []
    for k in range(max(len(b) for b in by_order)):
        for b in by_order:
            if k < len(b) and len(rows) < n:
                prompt, io, s = b[k]
                rows.append({"prompt": prompt, "correct": " " + io, "wrong": " " + s})
    return rows


def _abc(prompt: str, pattern: re.Pattern[str], io: str, xyz: list[str]) -> str:
    """`prompt` with the indirect object -> x, the first subject -> y, later subjects -> z."""
    x, y, z = xyz
    subjects = 0

    def swap(m: re.Match[str]) -> str:
        nonlocal subjects
        if m.group(1) == io:
            return x
        subjects += 1
        return y if subjects == 1 else z

    return pattern.sub(swap, prompt)


def _abc_names(
    names: list[str], rng: random.Random, i: int, prompt: str, correct: str, wrong: str
) -> Iterator[str]:
    """Row `i` with three fresh names of `names` (drawn by `rng`, up to 100 draws) in its three
    name slots."""
    io, s = correct.strip(), wrong.strip()
    pattern = re.compile(rf"(?<!\w)({re.escape(io)}|{re.escape(s)})(?!\w)")
    found = [m.group(1) for m in pattern.finditer(prompt)]
    if found.count(io) < 1 or found.count(s) < 2:
        raise AscaleError(
            f"row {i} ({prompt!r}) should name its indirect object {io!r} and, twice, its "
            f"subject {s!r}"
        )
    others = [x for x in names if not mentions(prompt, x)]
    return (_abc(prompt, pattern, io, rng.sample(others, 3)) for _ in range(100))


def ioi_corrupt(data: ContrastSet, model: HookedModel, *, seed: int = 0) -> ContrastSet:
    """The ABC corruption of Wang et al.: three fresh, distinct names in the three name slots.

    ``"When Mary and John went to the store, John gave a drink to"`` becomes e.g. ``"When
    Alice and Bob went to the store, Carol gave a drink to"``: the indirect object and both
    subject mentions get new names, so nothing in the context says who receives. Answers stay
    those of the clean row, and each prompt keeps its clean token length.

    Args:
        data: a clean set, as built by `ioi`.
        model: the model the set was tokenised for.
        seed: which replacement names are drawn.

    Returns:
        A `ContrastSet` aligned row by row with `data`.

    Raises:
        AscaleError: a prompt does not name its indirect object once and its subject twice,
            or no names keep its token length.

    Example:
        >>> clean = ioi(model)
        >>> corrupt = ioi_corrupt(clean, model)
        >>> corrupt.prompts[0]
        'When John and Carol went to the store, Mary gave a drink to'
    """
    abc_names = partial(_abc_names, _single_token_names(model), random.Random(seed))
    return corrupt(data, model, abc_names, none_fit="no names keep")

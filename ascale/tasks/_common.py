"""What the task builders share: finding a name in a prompt, keeping one token length, and
corrupting a clean set row by row at unchanged token lengths."""

import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ascale import _tl
from ascale._types import HookedModel
from ascale.data import ContrastSet
from ascale.errors import AscaleError, AscaleWarning

SAMPLE = 3000  # at most this many candidate prompts are tokenised to find lengths

# (row index, clean prompt, correct answer, wrong answer) -> corrupted prompts to try, in order
Candidates = Callable[[int, str, str, str], Iterable[str]]


def check_count(task: str, n: int, got: int, target: Any) -> None:
    """Say so (an `AscaleWarning`) when a builder returns fewer prompts than the `n` asked."""
    if got < n:
        where = "" if target is None else f" of {target} tokens"
        warnings.warn(
            f"{task}: n={n} prompts asked, but only {got} distinct prompt(s){where} exist for "
            f"this model (among the candidates tried); returning {got}",
            AscaleWarning,
            stacklevel=3,
        )


def templates_for(
    n: object,  # checked here, not by type
    choice: str | Sequence[str] | None,
    builtin: tuple[str, ...],
    check: Callable[[str], None],
) -> tuple[str, ...]:
    """The templates a builder asked for `n` prompts uses, each passed through `check`.

    ``None``: the first of `builtin`; ``"all"``: every one; otherwise `choice`, one template or
    several. Raises an `AscaleError` for `n` below 1 (before anything else).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise AscaleError(f"n must be a whole number of 1 or more, got {n!r}")
    if choice is None:
        chosen = builtin[:1]
    elif choice == "all":
        chosen = builtin
    else:
        chosen = (choice,) if isinstance(choice, str) else tuple(choice)
    for t in chosen:
        check(t)
    return chosen


def mentions(text: str, name: str) -> bool:
    """Whether `name` occurs in `text` as a whole word.

    Example:
        >>> mentions("Rome is the capital of France.", "France"), mentions("Francesca", "France")
        (True, False)
    """
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text) is not None


def token_length(model: HookedModel, prompt: str) -> int:
    """The number of tokens `model` gives `prompt` alone."""
    return int(_tl.tokenize(model, [prompt])[1][0])


def pick_length(
    model: HookedModel,
    prompts: list[str],
    length: int | str | None,
    anchors: list[str] | None = None,
) -> tuple[list[int], int | None]:
    """Indices of `prompts` to keep for `length` ("modal", an int, or None), and the length.

    With `anchors` (one answer string per prompt, e.g. the in-context false country), only the
    most common position of the anchor's token is kept as well: prompts of one length can still
    differ in layout ("Dublin" is one token after a space, three at the start of a sentence),
    and position-tied parameters must mean the same token in every prompt.
    """
    if length is None:
        return list(range(len(prompts))), None
    if length != "modal" and (not isinstance(length, int) or isinstance(length, bool)):
        raise AscaleError(f"length must be 'modal', an int, or None; got {length!r}")
    rows = [_tl.tokenize(model, [p])[0][0] for p in prompts]
    sizes = [len(r) for r in rows]
    target = Counter(sizes).most_common(1)[0][0] if length == "modal" else int(length)
    keep = [i for i, s in enumerate(sizes) if s == target]
    if anchors is not None and keep:
        where = {i: _first_index(rows[i], _tl.answer_token_ids(model, anchors[i])) for i in keep}
        modal = Counter(where.values()).most_common(1)[0][0]
        keep = [i for i in keep if where[i] == modal]
    return keep, target


def _first_index(tokens: Any, ids: list[int]) -> int:
    hits = (tokens == ids[0]).nonzero().flatten().tolist() if len(ids) == 1 else []
    return hits[0] if hits else -1


def corrupt(
    data: ContrastSet, model: HookedModel, candidates: Candidates, *, none_fit: str
) -> ContrastSet:
    """Each row of `data` with the first of its `candidates` prompts that keeps its token length.

    The answers stay those of the clean row. `candidates` is called once per row, in order, and
    its prompts are tokenised one at a time until one fits, so a seeded generator draws the same
    replacements whatever the tokenizer. A row none of whose candidates fits raises an
    `AscaleError` that names the row: ``"row i (prompt): {none_fit} the prompt at n tokens"``.
    """
    rows = []
    for i, (prompt, correct, wrong) in enumerate(
        zip(data.prompts, data.correct, data.wrong, strict=True)
    ):
        size = int(data.lengths[i])
        new = next(
            (c for c in candidates(i, prompt, correct, wrong) if token_length(model, c) == size),
            None,
        )
        if new is None:
            raise AscaleError(f"row {i} ({prompt!r}): {none_fit} the prompt at {size} tokens")
        rows.append({"prompt": new, "correct": correct, "wrong": wrong})
    return ContrastSet.from_rows(rows, model)

"""Contrast sets: prompts with a correct and a wrong single-token answer, tokenised for one model.

A row is ``{"prompt": "Rome is the capital of France. Rome is in", "correct": " Italy",
"wrong": " France"}``. Rows are tokenised once, with right padding (real tokens keep their
positions, so rotary models see the same positions as for an unpadded prompt), and the answer is
read at each prompt's last real token.

Rows are checked before any work: every field a non-empty string, every prompt within the
model's context window (a longer one would be cut and its answer read at the wrong token), every
answer one token. Likely mistakes that still work warn (`AscaleWarning`), naming the rows: an
answer without the leading space the model would write after the prompt, a prompt ending in a
space.

A row may also carry ``"corrupted"``: a counterfactual prompt of the same token length as its
``"prompt"`` (``"Rome is the capital of Peru. Rome is in"``), for activation patching and
counterfactual ablation (`ascale.compare`). Either every row of a set carries one or none does;
`corrupted_from_rows` tokenises them into a `ContrastSet` aligned with the clean one.
"""

import json
import random
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from ascale import models
from ascale.errors import AnswerTokenError, AscaleError, AscaleWarning, PromptLengthError
from ascale.hooked import HookedModel
from ascale.outputs import write_atomic

__all__ = ["ContrastSet", "corrupted_from_rows", "has_corrupted", "load_jsonl", "read_jsonl"]

FIELDS = ("prompt", "correct", "wrong")
CORRUPTED = "corrupted"  # the optional counterfactual prompt of a row


@dataclass(frozen=True)
class ContrastSet:
    """Prompts with a correct and a wrong answer token, tokenised for one model.

    Build one with `ContrastSet.from_rows` (or `load_jsonl`, or a task builder in `ascale.tasks`);
    the constructor itself takes already-checked tensors.

    Example:
        >>> data = ContrastSet.from_rows(
        ...     [{"prompt": "Rome is in", "correct": " Italy", "wrong": " France"}], model
        ... )
        >>> data.n_pos  # BOS, "Rome", " is", " in" (SmolLM2 adds no BOS: 3)
        4
    """

    prompts: tuple[str, ...]
    correct: tuple[str, ...]
    wrong: tuple[str, ...]
    tokens: Int[Tensor, "batch pos"] = field(repr=False)
    lengths: Int[Tensor, " batch"] = field(repr=False)
    correct_ids: Int[Tensor, " batch"] = field(repr=False)
    wrong_ids: Int[Tensor, " batch"] = field(repr=False)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], model: HookedModel) -> "ContrastSet":
        """Tokenise ``{"prompt", "correct", "wrong"}`` rows for `model`, checking every row.

        (Rows are typed ``Mapping[str, Any]``: they are user data that this method checks
        itself, with messages naming row and field.)

        Raises:
            AnswerTokenError: an answer is not exactly one token; the message names the row.
            PromptLengthError: a prompt is longer than the model's context window.
            AscaleError: no rows; a row misses a key, has a field that is not a string, or an
                empty prompt or answer.

        Warns:
            AscaleWarning: answers without the leading space the model would write, prompts
                ending in a space; the message names the rows.
        """
        rows = list(rows)
        if not rows:
            raise AscaleError("a contrast set needs at least one row")
        for i, row in enumerate(rows):
            check_row(row, f"row {i}")
        prompts = tuple(r["prompt"] for r in rows)
        correct = tuple(r["correct"] for r in rows)
        wrong = tuple(r["wrong"] for r in rows)
        _warn_spacing(prompts, correct, wrong)
        correct_ids = _answer_ids(model, correct, prompts, "correct")
        wrong_ids = _answer_ids(model, wrong, prompts, "wrong")
        same = (correct_ids == wrong_ids).nonzero().flatten().tolist()
        if same:
            i = same[0]
            raise AnswerTokenError(
                f"row {i} ({prompts[i]!r}): correct and wrong answer are the same token "
                f"{correct[i]!r}"
            )
        tokens, lengths = models.tokenize(model, list(prompts))
        _check_context(model, prompts, lengths)
        return cls(prompts, correct, wrong, tokens, lengths, correct_ids, wrong_ids)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def is_uniform(self) -> bool:
        """Whether every prompt has the same token length."""
        return bool((self.lengths == self.lengths[0]).all())

    @property
    def n_pos(self) -> int:
        """The common token length of the prompts.

        Raises:
            PromptLengthError: prompts differ in length; the message counts each length.
        """
        if not self.is_uniform:
            counts = Counter(self.lengths.tolist())
            table = ", ".join(f"{n} prompt(s) of {k} tokens" for k, n in sorted(counts.items()))
            raise PromptLengthError(
                f"prompts differ in token length ({table}); position-tied interventions need "
                "one length: filter with `data.with_length(n)` or use DynamicScalars"
            )
        return int(self.lengths[0])

    @property
    def attention_mask(self) -> Int[Tensor, "batch pos"]:
        """1 on real tokens, 0 on right padding."""
        positions = torch.arange(self.tokens.shape[1])
        return (positions[None, :] < self.lengths[:, None]).long()

    def subset(self, index: Sequence[int] | Tensor) -> "ContrastSet":
        """The rows at `index`, in that order (padding trimmed to the longest kept prompt)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        keep = idx.tolist()
        lengths = self.lengths[idx]
        width = int(lengths.max()) if len(keep) else 0
        return ContrastSet(
            tuple(self.prompts[i] for i in keep),
            tuple(self.correct[i] for i in keep),
            tuple(self.wrong[i] for i in keep),
            self.tokens[idx, :width],
            lengths,
            self.correct_ids[idx],
            self.wrong_ids[idx],
        )

    def with_length(self, n_pos: int) -> "ContrastSet":
        """Only the prompts of exactly `n_pos` tokens."""
        keep = (self.lengths == n_pos).nonzero().flatten()
        if len(keep) == 0:
            raise PromptLengthError(
                f"no prompt has {n_pos} tokens; lengths present: "
                f"{sorted(set(self.lengths.tolist()))}"
            )
        return self.subset(keep)

    def split(self, test_size: float = 0.3, seed: int = 0) -> "tuple[ContrastSet, ContrastSet]":
        """Deterministic shuffled split into (train, test); `test_size` is a share in (0, 1)."""
        if not 0.0 < test_size < 1.0:
            raise AscaleError(f"test_size must lie in (0, 1), got {test_size}")
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        n_test = max(1, round(len(order) * test_size))
        if n_test >= len(order):
            raise AscaleError(f"{len(self)} prompt(s) are too few to split with {test_size=}")
        return self.subset(sorted(order[n_test:])), self.subset(sorted(order[:n_test]))

    def rows(self) -> list[dict[str, str]]:
        """The rows as dictionaries, ready for JSON."""
        return [
            {"prompt": p, "correct": c, "wrong": w}
            for p, c, w in zip(self.prompts, self.correct, self.wrong, strict=True)
        ]

    def to_jsonl(self, path: str | Path) -> Path:
        """Write one ``{"prompt", "correct", "wrong"}`` object a line (atomically)."""
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.rows())
        return write_atomic(path, text)


def load_jsonl(path: str | Path, model: HookedModel) -> ContrastSet:
    """Read a jsonl contrast set and tokenise it for `model` (`read_jsonl`, then `from_rows`).

    Example:
        >>> path = data.to_jsonl("ioi.jsonl")
        >>> load_jsonl(path, model).prompts == data.prompts
        True
    """
    return ContrastSet.from_rows(read_jsonl(path), model)


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
        raise AscaleError(
            f"{where}: expected an object with keys {list(FIELDS)}, got {_short(row)}"
        )
    missing = [k for k in FIELDS if k not in row]
    if missing:
        raise AscaleError(f"{where} misses key(s) {missing}: {_short(dict(row))}")
    keys = (*FIELDS, CORRUPTED) if CORRUPTED in row else FIELDS
    for key in keys:
        value = row[key]
        if not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            raise AscaleError(
                f"{where}: field {key!r} is {kind} {_short(value)}, not a string; quote it"
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


def corrupted_from_rows(
    rows: Iterable[Mapping[str, Any]], model: HookedModel, *, clean: ContrastSet | None = None
) -> ContrastSet | None:
    """The rows' counterfactual prompts (``"corrupted"``), tokenised for `model` and aligned
    row by row with their clean set: same answers, same token lengths. ``None`` when no row
    carries one.

    Args:
        rows: the rows, as for `ContrastSet.from_rows`.
        model: the model.
        clean: ``ContrastSet.from_rows(rows, model)``, if already built (saves tokenising it
            again).

    Raises:
        PromptLengthError: a corrupted prompt has another token length than its prompt (the
            message names the row and both lengths).
        AscaleError: some rows carry ``corrupted`` and others not, or a field is malformed.

    Example:
        >>> rows = [{"prompt": "Rome is the capital of France. Rome is in", "correct": " Italy",
        ...          "wrong": " France", "corrupted": "Rome is the capital of Spain. Rome is in"}]
        >>> corrupted = corrupted_from_rows(rows, model)
        >>> corrupted.prompts, corrupted.correct
        (('Rome is the capital of Spain. Rome is in',), (' Italy',))
    """
    rows = list(rows)
    for i, row in enumerate(rows):
        check_row(row, f"row {i}")
    if not has_corrupted(rows):
        return None
    swapped = [{**row, "prompt": row[CORRUPTED]} for row in rows]
    if clean is None:
        clean = ContrastSet.from_rows(rows, model)
    with warnings.catch_warnings():  # the answers were checked (and warned about) with `clean`
        warnings.simplefilter("ignore", AscaleWarning)
        corrupted = ContrastSet.from_rows(swapped, model)
    differ = (corrupted.lengths != clean.lengths).nonzero().flatten().tolist()
    if differ:
        i = differ[0]
        raise PromptLengthError(
            f"row {i}: the corrupted prompt {_short(rows[i][CORRUPTED], 50)} is "
            f"{int(corrupted.lengths[i])} tokens, its prompt {_short(rows[i]['prompt'], 50)} "
            f"{int(clean.lengths[i])} ({len(differ)} row(s) differ); a counterfactual must have "
            "its prompt's token length (patching swaps activations position by position)"
        )
    return corrupted


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _check_context(model: HookedModel, prompts: Sequence[str], lengths: Tensor) -> None:
    """Refuse prompts longer than the model's context window (they would be cut silently)."""
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is None:
        return
    for i in (lengths >= n_ctx).nonzero().flatten().tolist():
        # models.tokenize cuts at n_ctx, so a prompt at the limit is counted again, uncut
        n = int(model.to_tokens(prompts[i], truncate=False).shape[1])
        if n > n_ctx:
            raise PromptLengthError(
                f"row {i} ({_short(prompts[i], 40)}) is {n} tokens, longer than the model's "
                f"context window of {n_ctx} tokens; shorten it (a cut prompt would have its "
                "answer read at the wrong token)"
            )


def _warn_spacing(prompts: Sequence[str], correct: Sequence[str], wrong: Sequence[str]) -> None:
    """Warn about answers the model would not write after their prompt, naming the rows."""
    unspaced = [
        i
        for i, (p, c, w) in enumerate(zip(prompts, correct, wrong, strict=True))
        if not p[-1:].isspace() and (c[:1].isalnum() or w[:1].isalnum())
    ]
    if unspaced:
        i = unspaced[0]
        answer = correct[i] if correct[i][:1].isalnum() else wrong[i]
        warnings.warn(
            f"{_rows(unspaced, len(prompts))}: an answer without a leading space after a "
            f"prompt that does not end in one (row {i}: {answer!r} after "
            f"{_short(prompts[i][-30:], 40)}); the model writes the space with the word: did "
            f"you mean {' ' + answer!r}?",
            AscaleWarning,
            stacklevel=3,
        )
    trailing = [i for i, p in enumerate(prompts) if p[-1:].isspace()]
    if trailing:
        i = trailing[0]
        warnings.warn(
            f"{_rows(trailing, len(prompts))}: the prompt ends in a space (row {i}: "
            f"{_short(prompts[i][-30:], 40)}); tokenizers put the space in front of the next "
            "word, so the model rarely sees this: move the space into the answers",
            AscaleWarning,
            stacklevel=3,
        )


def _rows(index: Sequence[int], total: int) -> str:
    shown = ", ".join(str(i) for i in index[:10]) + (", ..." if len(index) > 10 else "")
    return f"row(s) {shown} ({len(index)} of {total})"


def _answer_ids(
    model: HookedModel, answers: Sequence[str], prompts: Sequence[str], kind: str
) -> Int[Tensor, " batch"]:
    ids = []
    for i, answer in enumerate(answers):
        pieces = models.answer_token_ids(model, answer)
        if len(pieces) != 1:
            raise AnswerTokenError(
                f"row {i} ({prompts[i]!r}): the {kind} answer {answer!r} is {len(pieces)} "
                f"tokens {models.str_tokens(model, torch.tensor(pieces))}, not one; answers must "
                "be single tokens (mind the leading space)"
            )
        ids.append(pieces[0])
    return torch.tensor(ids, dtype=torch.long)

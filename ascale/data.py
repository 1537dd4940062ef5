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

from ascale import _tl
from ascale._outputs import write_atomic
from ascale._rows import CORRUPTED, check_row, has_corrupted, read_jsonl, short
from ascale._types import HookedModel
from ascale.errors import AnswerTokenError, AscaleError, AscaleWarning, PromptLengthError

__all__ = ["ContrastSet", "check_aligned", "check_data", "corrupted_from_rows", "load_jsonl"]


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
        if isinstance(rows, str | bytes | Mapping) or not isinstance(rows, Iterable):
            raise AscaleError(
                "rows must be a list of {'prompt', 'correct', 'wrong'} objects, got "
                f"{type(rows).__name__} {short(rows, 40)}"
            )
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
        tokens, lengths = _tl.tokenize(model, list(prompts))
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
        number = isinstance(test_size, int | float) and not isinstance(test_size, bool)
        if not (number and 0.0 < test_size < 1.0):
            raise AscaleError(
                f"test_size must be a share in (0, 1), such as 0.3, got {test_size!r}"
            )
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
            f"row {i}: the corrupted prompt {short(rows[i][CORRUPTED], 50)} is "
            f"{int(corrupted.lengths[i])} tokens, its prompt {short(rows[i]['prompt'], 50)} "
            f"{int(clean.lengths[i])} ({len(differ)} row(s) differ); a counterfactual must have "
            "its prompt's token length (patching swaps activations position by position)"
        )
    return corrupted


def check_data(data: object, name: str = "data") -> ContrastSet:
    """`data` if it is a `ContrastSet` holding at least one prompt; else an `AscaleError`
    naming `name`, what was given and how to make one (every public entry point taking prompts
    calls this first).

    Example:
        >>> check_data(data) is data
        True
    """
    if not isinstance(data, ContrastSet):
        raise AscaleError(
            f"{name} must be a ContrastSet (ascale.ContrastSet.from_rows(rows, model), "
            f"ascale.load_jsonl or a task in ascale.tasks), got {type(data).__name__} "
            f"{short(data, 40)}"
        )
    if len(data) == 0:
        raise AscaleError(f"{name} holds no prompts (an empty subset?); give at least one")
    return data


def check_aligned(data: ContrastSet, corrupted: object, name: str = "corrupted") -> ContrastSet:
    """`corrupted` if it is each row of `data`'s counterfactual: a `ContrastSet` of as many
    rows, each with its clean row's answers and token length; else an `AscaleError` naming the
    first row that differs and how (a set shuffled or built from other rows).

    Example:
        >>> check_aligned(data, corrupted) is corrupted
        True
    """
    corrupted = check_data(corrupted, name)
    if len(corrupted) != len(data):
        raise PromptLengthError(
            f"{name} holds {len(corrupted)} rows for {len(data)} clean rows; it must align row "
            "by row with the clean set: each row's counterfactual, in the same order"
        )
    checks = (
        ("correct answer", corrupted.correct_ids != data.correct_ids, data.correct, corrupted.correct),
        ("wrong answer", corrupted.wrong_ids != data.wrong_ids, data.wrong, corrupted.wrong),
        ("token length", corrupted.lengths != data.lengths, data.lengths.tolist(), corrupted.lengths.tolist()),
    )  # fmt: skip
    for what, differ, mine, theirs in checks:
        rows = differ.nonzero().flatten().tolist()
        if rows:
            i = rows[0]
            error = PromptLengthError if what == "token length" else AscaleError
            raise error(
                f"{name} row {i} ({short(corrupted.prompts[i], 40)}) has the {what} "
                f"{theirs[i]!r}, its clean row ({short(data.prompts[i], 40)}) {mine[i]!r} "
                f"({_rows(rows, len(data))} differ): a counterfactual set must align row by "
                "row with the clean set, each row keeping its clean row's answers and length"
            )
    return corrupted


def _check_context(model: HookedModel, prompts: Sequence[str], lengths: Tensor) -> None:
    """Refuse prompts longer than the model's context window (they would be cut silently)."""
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is None:
        return
    for i in (lengths >= n_ctx).nonzero().flatten().tolist():
        # _tl.tokenize cuts at n_ctx, so a prompt at the limit is counted again, uncut
        n = int(model.to_tokens(prompts[i], truncate=False).shape[1])
        if n > n_ctx:
            raise PromptLengthError(
                f"row {i} ({short(prompts[i], 40)}) is {n} tokens, longer than the model's "
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
            f"{short(prompts[i][-30:], 40)}); the model writes the space with the word: did "
            f"you mean {' ' + answer!r}?",
            AscaleWarning,
            stacklevel=3,
        )
    trailing = [i for i, p in enumerate(prompts) if p[-1:].isspace()]
    if trailing:
        i = trailing[0]
        warnings.warn(
            f"{_rows(trailing, len(prompts))}: the prompt ends in a space (row {i}: "
            f"{short(prompts[i][-30:], 40)}); tokenizers put the space in front of the next "
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
        pieces = _tl.answer_token_ids(model, answer)
        if len(pieces) != 1:
            raise AnswerTokenError(
                f"row {i} ({prompts[i]!r}): the {kind} answer {answer!r} is {len(pieces)} "
                f"tokens {_tl.str_tokens(model, torch.tensor(pieces))}, not one; answers must "
                "be single tokens (mind the leading space)"
            )
        ids.append(pieces[0])
    return torch.tensor(ids, dtype=torch.long)
